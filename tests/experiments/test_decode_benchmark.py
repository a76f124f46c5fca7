"""experiments/decode_benchmark.py: a short run prints both figures and their ratio; its reference views are
jaxcnn's training views where no DCT scaling applies (but at the edges: a crop, then a resize, does not see
the pixels beyond the box that jaxcnn's resizing filter reaches)."""

import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from jaxcnn.data import imagenet

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))
import decode_benchmark  # noqa: E402


def test_a_short_run_prints_both_methods_and_the_ratio(capsys):
    decode_benchmark.main(["--images", "2", "--seconds", "0.2", "--rounds", "1", "--image_size", "32"])
    out = capsys.readouterr().out
    assert "2 JPEGs, train views at 32x32" in out and "plain Pillow" in out and "ratio" in out


def test_plain_training_views_are_jaxcnns_without_dct_scaling():
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(
        buffer, "PNG"
    )
    for seed in range(4):
        np.testing.assert_array_equal(
            decode_benchmark.plain_view(buffer.getvalue(), 16, np.random.default_rng(seed))[1:-1, 1:-1],
            imagenet.decode_view(buffer.getvalue(), 16, np.random.default_rng(seed))[1:-1, 1:-1],
        )
    assert decode_benchmark.plain_view(buffer.getvalue(), 16, None).shape == (16, 16, 3)

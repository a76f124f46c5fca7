"""experiments/configs/imagenet_resnet50.py end to end on generated JPEGs: a tiny ResNet-50 for two steps."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxcnn.training import train_and_evaluate

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
sys.path.insert(0, str(EXPERIMENTS))
import make_jpegs  # noqa: E402


def imagenet_resnet50_config():
    spec = importlib.util.spec_from_file_location(
        "imagenet_resnet50", EXPERIMENTS / "configs" / "imagenet_resnet50.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


@pytest.mark.slow
def test_the_recipe_trains_on_generated_jpegs(tmp_path):
    make_jpegs.write_jpegs(tmp_path / "jpegs", classes=2, per_class=8, test_per_class=2, size=(64, 48))
    config = imagenet_resnet50_config()
    config.model_kwargs.update({"stage_sizes": (1,), "widths": (4,)})  # one of the recipe's blocks
    config.update_from_flattened_dict(
        {"data.dir": str(tmp_path / "jpegs"), "data.image_size": 32, "data.workers": 0, "batch_size": 8,
         "num_steps": 2, "eval.batch_size": 4, "log_every": 1, "checkpoint_every": 2}
    )  # fmt: skip
    result = train_and_evaluate(config, tmp_path / "run", handle_signals=False)
    assert (
        result.steps == 2
        and result.dataset == "imagenet"
        and list(result.class_names) == ["class_0", "class_1"]
    )
    assert np.isfinite(result.test_loss)
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if line["split"] == "train"] == [1, 2]

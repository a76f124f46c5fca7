"""docs/zoo.md's model table (shown by the site's zoo guide) is the one experiments/zoo_table.py generates."""

import importlib.util
from pathlib import Path

import pytest

from jaxcnn import models

ROOT = Path(__file__).resolve().parents[2]
# Regenerated here: one model of each kind of row (the whole table takes a minute to trace; the counts of
# every model are checked by test_bridge, their logits by test_torch_weights).
SAMPLE = ("lenet5", "resnet20", "resnet18", "unet_small", "densenet_bc_100_12")


def _zoo_table_module():
    spec = importlib.util.spec_from_file_location("zoo_table", ROOT / "experiments" / "zoo_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_docs_hold_the_generated_table():
    zoo_table = _zoo_table_module()
    text = (ROOT / "docs" / "zoo.md").read_text()
    lines = text.splitlines()
    assert [line.split("`")[1] for line in lines if line.startswith("| `")] == models.available(), (
        "run: python experiments/zoo_table.py --write"
    )
    for name in SAMPLE:
        assert zoo_table.row(name) in lines, (
            f"{name}'s row is stale; run: python experiments/zoo_table.py --write"
        )
    assert "| `resnet18` | 224x224x3 | 1000 | 11,689,512 |" in zoo_table.row("resnet18")

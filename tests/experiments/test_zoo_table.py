"""The README's and docs/zoo.md's model table is the one experiments/zoo_table.py generates."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _zoo_table_module():
    spec = importlib.util.spec_from_file_location("zoo_table", ROOT / "experiments" / "zoo_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_readme_and_docs_hold_the_generated_table():
    zoo_table = _zoo_table_module()
    text = zoo_table.table()
    assert "| `resnet50` | 224x224x3 | 1000 | 25,557,032 |" in text
    assert (ROOT / "docs" / "zoo.md").read_text() == text, "run: python experiments/zoo_table.py --write"
    readme = (ROOT / "README.md").read_text()
    assert zoo_table.readme_with(text, readme) == readme, "run: python experiments/zoo_table.py --write"

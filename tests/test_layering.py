"""No module of jaxcnn imports a module above it: the packages form layers, read from the bottom up."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "jaxcnn"

# Each part of jaxcnn and its layer: a part may import parts of lower layers and itself, nothing else.
LAYERS = {
    "jaxcnn._validate": 0,
    "jaxcnn._registry": 0,
    "jaxcnn.runtime": 0,
    "jaxcnn.functional": 1,
    "jaxcnn.data": 1,
    "jaxcnn.parallel": 1,
    "jaxcnn._layer_calls": 2,
    "jaxcnn.layers": 3,
    "jaxcnn.nnx_layers": 3,
    "jaxcnn.models": 4,
    "jaxcnn.summary": 5,
    "jaxcnn.training": 5,
    "jaxcnn.visualize": 6,
    "jaxcnn.cli": 7,
    "jaxcnn.__main__": 8,
    "jaxcnn": 9,  # the package's __init__: the public surface
}


def _part(module: str) -> str:
    """The entry of LAYERS that `module` belongs to (the longest prefix)."""
    matches = [name for name in LAYERS if module == name or module.startswith(name + ".")]
    return max(matches, key=len)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    dotted = PACKAGE.parent / name.replace(".", "/")
    return dotted.with_suffix(".py").exists() or (dotted / "__init__.py").exists()


def _imports(path: Path) -> set[str]:
    """The jaxcnn modules `path` imports: `from jaxcnn import models` is jaxcnn.models, `from
    jaxcnn.models import create` is jaxcnn.models."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                member = f"{node.module}.{alias.name}"
                names.add(member if _is_module(member) else node.module)
    return {name for name in names if name == "jaxcnn" or name.startswith("jaxcnn.")}


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_only_lower_layers_or_its_own_part(path):
    module = _module_name(path)
    part = _part(module)
    for imported in _imports(path):
        other = _part(imported)
        assert other == part or LAYERS[other] < LAYERS[part], (
            f"{module} (layer {LAYERS[part]}, {part}) imports {imported} (layer {LAYERS[other]}, {other})"
        )


def test_every_module_has_a_layer():
    assert {_part(_module_name(path)) for path in MODULES} <= set(LAYERS)

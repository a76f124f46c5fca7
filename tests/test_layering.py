"""No module of jaxcnn imports a module above it: the packages form layers, read from the bottom up."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "jaxcnn"

# Each part of jaxcnn and its layer: a part may import parts of lower layers and itself, nothing else.
LAYERS = {
    "jaxcnn._validate": 0,
    "jaxcnn._registry": 0,
    "jaxcnn._files": 0,
    "jaxcnn._version": 0,
    "jaxcnn.runtime": 0,
    "jaxcnn.functional": 1,
    "jaxcnn.data": 1,
    "jaxcnn.parallel": 1,
    "jaxcnn.nnx_layers": 3,
    "jaxcnn.layers": 4,  # the Linen forms, derived from the NNX layers
    "jaxcnn.models": 4,
    "jaxcnn.summary": 5,
    "jaxcnn.training": 5,
    "jaxcnn.visualize": 6,
    "jaxcnn.export": 6,
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


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """The ids of the nodes under `if TYPE_CHECKING:`, which never run."""
    blocks = [
        n for n in ast.walk(tree) if isinstance(n, ast.If) and ast.unparse(n.test).endswith("TYPE_CHECKING")
    ]
    return {id(node) for block in blocks for statement in block.body for node in ast.walk(statement)}


def _imports(path: Path, *, at_runtime: bool = False) -> set[str]:
    """The jaxcnn modules `path` imports: `from jaxcnn import models` is jaxcnn.models, `from
    jaxcnn.models import create` is jaxcnn.models. With `at_runtime`, those imported when the module or
    one of its functions runs (not for type checkers only)."""
    tree = ast.parse(path.read_text())
    skipped = _type_checking_nodes(tree) if at_runtime else set()
    names = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
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


def _circle(graph: dict[str, set[str]]) -> list[str] | None:
    """A circle of `graph`'s edges `module -> imported`, as the modules along it, or None."""
    done, path = set(), []

    def visit(module: str) -> list[str] | None:
        if module in path:
            return path[path.index(module) :] + [module]
        if module in done:
            return None
        path.append(module)
        for imported in sorted(graph.get(module, ())):
            found = visit(imported)
            if found:
                return found
        path.pop()
        done.add(module)
        return None

    return next((c for c in map(visit, sorted(graph)) if c), None)


def test_no_module_imports_itself_through_others():
    """No circle of imports (type checkers' aside), not even through an import inside a function: a
    module in one works only as long as the others happen to be imported first."""
    graph = {_module_name(path): _imports(path, at_runtime=True) for path in MODULES}
    circle = _circle(graph)
    assert circle is None, " -> ".join(circle)


def test_no_module_of_training_imports_itself_even_for_type_checkers():
    """Inside training/ not even a type checker's import closes a circle (the run, its actions and the
    build once did: actions -> build -> workdir -> config -> actions): each module reads from the bottom
    up, `run` below the actions and the build."""
    training = {_module_name(path): _imports(path) for path in MODULES if path.parent.name == "training"}
    circle = _circle({module: imported & training.keys() for module, imported in training.items()})
    assert circle is None, " -> ".join(circle)

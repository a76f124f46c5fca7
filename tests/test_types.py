"""The package's annotations: mypy finds no error with pyproject's [tool.mypy] (strict on jaxcnn/functional
and jaxcnn/_validate.py), and every public function and method of the public modules is annotated, so the
types a checker reads for a user's code are the ones the code keeps."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "jaxcnn"
# The public modules: every file of these packages whose name has no leading underscore, and these files.
PUBLIC_PACKAGES = ("functional", "data", "models", "parallel", "export", "training")
PUBLIC_FILES = ("_validate.py", "nnx_layers.py", "layers.py", "summary.py", "visualize.py")


def _public_files() -> list[Path]:
    files = [PACKAGE / name for name in PUBLIC_FILES]
    for package in PUBLIC_PACKAGES:
        files += [path for path in sorted((PACKAGE / package).glob("*.py")) if not path.name.startswith("_")]
    return files + [PACKAGE / package / "__init__.py" for package in PUBLIC_PACKAGES]


def _unannotated(function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    """The names of `function`'s parameters without an annotation, and "return" when its return has none
    (`__init__` returns None implicitly, as mypy reads it once a parameter is annotated)."""
    args = function.args
    params = [*args.posonlyargs, *args.args, *args.kwonlyargs, *filter(None, (args.vararg, args.kwarg))]
    missing = [p.arg for p in params if p.annotation is None and p.arg not in ("self", "cls")]
    if function.returns is None and function.name != "__init__":
        missing.append("return")
    return missing


def _public_functions(tree: ast.Module):
    """`(qualified name, node)` of the module's public functions and its public classes' public methods
    (`__init__` and `__call__` included)."""
    functions = (ast.FunctionDef, ast.AsyncFunctionDef)
    for node in tree.body:
        if isinstance(node, functions) and not node.name.startswith("_"):
            yield node.name, node
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for method in node.body:
                if isinstance(method, functions) and (
                    not method.name.startswith("_") or method.name in ("__init__", "__call__")
                ):
                    yield f"{node.name}.{method.name}", method


def test_public_functions_are_annotated():
    missing = [
        f"{path.relative_to(ROOT)}:{node.lineno} {name}: {', '.join(unannotated)}"
        for path in _public_files()
        for name, node in _public_functions(ast.parse(path.read_text()))
        if (unannotated := _unannotated(node))
    ]
    assert not missing, "public functions without annotations:\n" + "\n".join(missing)


# A cold run: ~20 s of CPU; 29 s alone on a 2-core machine, 115-126 s while other tests share its cores.
@pytest.mark.slow
def test_mypy_finds_no_error(tmp_path):
    pytest.importorskip("mypy", reason="mypy comes with the dev extra: pip install -e '.[dev]'")
    # A cache of its own: cold, as in CI's fresh clone, and never shared with another test process.
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy_cache")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr

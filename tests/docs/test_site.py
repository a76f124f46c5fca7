"""The documentation site: its generated config reference, its notebooks' copies, a strict build, and the
built pages as headless Chromium renders them."""

import html
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import ml_collections
import nbformat
import pytest

pytest.importorskip("mkdocs", reason="the docs extra is not installed: bash setup.sh dev (or docs)")

from jaxcnn.training import default_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_config_reference_lists_every_key_with_its_default():
    page = _hooks().config_reference()
    expected = []  # (dotted key, default) from the config itself
    for name, value in default_config().items():
        if isinstance(value, ml_collections.ConfigDict) and name != "model_kwargs":
            expected += [(f"{name}.{key}", default) for key, default in value.items()]
        else:
            expected.append(
                (name, value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value)
            )
    for key, default in expected:
        assert f"| `{key}` | `{default!r}` |" in page, (
            f"config.{key} (default {default!r}) is not in the page"
        )
    rows = {line.split("`")[1]: line for line in page.splitlines() if line.startswith("| `")}
    assert len(rows) == len(expected)
    # Meanings come from the settings classes' Attributes sections, both names of a shared entry included.
    assert "processes that gather" in rows["data.workers"]
    assert "Beta(alpha, alpha)" in rows["augment.mixup_alpha"]
    assert "Beta(alpha, alpha)" in rows["augment.cutmix_alpha"]
    assert "| yes |" in rows["checkpoints.keep"] and "| yes |" not in rows["seed"]


def test_rendered_notebooks_are_the_notebooks_run():
    assert _hooks().stale_notebooks() == [], "run: .venv/bin/python docs/execute_notebooks.py"
    for path in sorted((ROOT / "docs" / "notebooks").glob("*.ipynb")):
        code = [cell for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"]
        assert all(cell.execution_count for cell in code), f"{path.name} holds cells that did not run"


def _build(out: Path) -> None:
    """Builds the site into `out`, strict: any warning of mkdocs' (a broken link or anchor, a reference that
    does not resolve, a docstring that does not parse, a stale notebook copy) fails it."""
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _render(page: Path, profile: Path) -> tuple[str, str]:
    """`page`'s DOM after headless Chromium loaded it (scripts run), and its text without tags."""
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
         "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0 and "<body" in result.stdout, result.stderr[-2000:]
    return result.stdout, html.unescape(re.sub(r"<[^>]+>", "", result.stdout))


@pytest.mark.slow
def test_site_builds_strict_and_renders_in_chromium(tmp_path):
    site = tmp_path / "site"
    _build(site)  # one build for every check: it takes ~10 s of CPU
    if CHROMIUM is None:
        pytest.skip("the site built; Chromium is absent, so no page was opened (apt-get install chromium)")

    dom, text = _render(site / "index.html", tmp_path / "profile")  # the landing page
    assert re.search(r"<title>\s*jaxcnn\s*</title>", dom)
    assert "Quick start" in text and "bash setup.sh dev && .venv/bin/python -m pytest" in text
    assert re.search(r'<img[^>]+src="curves.png"', dom)

    dom, text = _render(site / "reference" / "functional.html", tmp_path / "profile")  # an API page
    assert 'id="jaxcnn.functional.conv_output_size"' in dom
    signature = re.sub(r"\s+", " ", text[text.index("conv_output_size(") :][:300])
    # Its parameters in order, with their annotations where the source has them.
    assert re.match(
        r"conv_output_size\( size(: int)?, window(: int)?, stride(: int)? ?= ?1, padding", signature
    ), signature
    assert ") -> int" in signature
    assert "W2 = (W1 - F + 2P) / S + 1" in text  # its docstring

    dom, text = _render(site / "notebooks" / "04_lenet5_fashion_mnist.html", tmp_path / "profile")
    assert "LeNet-5 on Fashion-MNIST" in text
    assert len(re.findall(r'<img[^>]+src="data:image/png;base64,', dom)) >= 3  # the run's figures

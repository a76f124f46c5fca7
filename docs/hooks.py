"""mkdocs hooks (mkdocs.yml's `hooks:`): the pages that come from the code, made at every build.

- `reference/config.md`: every config key, its default and meaning, from `training.config.KEYS` and each
  section's settings class (`training.config.SECTIONS`), so the page cannot drift from the code.
- The notebooks: the site renders docs/notebooks/NAME.ipynb, run with its outputs by
  docs/execute_notebooks.py (the build executes nothing); a copy whose cells differ from
  notebooks/NAME.ipynb, or a notebook without a copy, is a build warning (an error under --strict).
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import re
from pathlib import Path

import nbformat
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
RENDERED_NOTEBOOKS = ROOT / "docs" / "notebooks"
CONFIG_PAGE = "reference/config.md"

GOOGLE_SECTION = re.compile(r"^([A-Z][a-z]+):$")  # "Attributes:", "Raises:"
ATTRIBUTE = re.compile(r"^  (\w+(?:, \w+)*): (.*)$")  # an entry of Attributes: (continuations: deeper)

log = logging.getLogger("mkdocs.hooks.jaxcnn")


def _cells(path: Path) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source) for cell in nbformat.read(path, as_version=4).cells]


def stale_notebooks() -> list[str]:
    """Names of the notebooks whose rendered copy is missing or holds other cells than the notebook."""
    return [
        path.stem
        for path in sorted(NOTEBOOKS.glob("*.ipynb"))
        if not (RENDERED_NOTEBOOKS / path.name).is_file()
        or _cells(path) != _cells(RENDERED_NOTEBOOKS / path.name)
    ]


def _cell(text: str) -> str:
    """`text` as one cell of a Markdown table."""
    return " ".join(text.split()).replace("|", "\\|")


def _key_table(rows) -> list[str]:
    """A table of `(key, default, resumable, meaning)` rows."""
    lines = ["| key | default | resumable | meaning |", "| --- | --- | --- | --- |"]
    lines += [
        f"| `{key}` | `{default!r}` | {'yes' if resumable else ''} | {_cell(doc)} |"
        for key, default, resumable, doc in rows
    ]
    return lines + [""]


def _public_path(settings: type) -> str:
    """`jaxcnn.training.X` or `jaxcnn.data.X`: where the API reference shows the settings class."""
    import jaxcnn.data
    import jaxcnn.training

    for package in (jaxcnn.training, jaxcnn.data):
        if getattr(package, settings.__name__, None) is settings:
            return f"{package.__name__}.{settings.__name__}"
    return f"{settings.__module__}.{settings.__name__}"


def _docstring(settings: type) -> tuple[str, dict[str, str]]:
    """A settings class's docstring: its prose (what precedes the first `Section:` line) and the meaning
    of each key its `Attributes:` section documents ("mixup_alpha, cutmix_alpha: ..." documents both)."""
    prose, sections, current = [], {}, None
    for line in inspect.getdoc(settings).splitlines():
        header = GOOGLE_SECTION.match(line)
        if header:
            current = sections.setdefault(header.group(1), [])
        else:
            (prose if current is None else current).append(line)
    meanings, names = {}, []
    for line in sections.get("Attributes", []):
        entry = ATTRIBUTE.match(line)
        if entry:
            names, line = entry.group(1).split(", "), entry.group(2)
        for name in names:
            meanings[name] = f"{meanings.get(name, '')} {line.strip()}"
    return "\n".join(prose).strip(), meanings


def _section(name: str, settings: type) -> list[str]:
    """A section's heading, its class's prose and a table of its keys."""
    prose, meanings = _docstring(settings)
    path = _public_path(settings)
    rows = [
        (
            f"{name}.{field.name}",
            field.default,
            field.metadata.get("resumable", False),
            meanings.get(field.name, ""),
        )
        for field in dataclasses.fields(settings)
    ]
    return [f"## `{name}`", "", f"Read by [`{path}`][{path}].", "", prose, "", *_key_table(rows)]


def config_reference() -> str:
    """The config reference page (Markdown)."""
    from jaxcnn.training.config import KEYS, SECTIONS

    lines = [
        "# Config reference",
        "",
        "Every key of `jaxcnn.training.default_config()`, generated at each build from",
        "`jaxcnn.training.config.KEYS` and each section's settings class. Set a key with",
        "`--config.KEY=VALUE` (a section's as `--config.optim.weight_decay=5e-4`); keys marked resumable may",
        "change when a run is resumed. How configs and experiments fit together: [Configs and",
        "experiments](../guides/experiments.md).",
        "",
        "## Top-level keys",
        "",
        *_key_table((name, key.default, key.resumable, key.doc) for name, key in KEYS.items()),
    ]
    for name, settings in SECTIONS.items():
        lines += _section(name, settings)
    return "\n".join(lines)


def on_pre_build(config, **kwargs) -> None:
    stale = stale_notebooks()
    if stale:
        log.warning(
            "the site's copies of notebooks %s are missing or differ from notebooks/; run: "
            ".venv/bin/python docs/execute_notebooks.py %s",
            ", ".join(stale),
            " ".join(stale),
        )


def on_files(files, config, **kwargs):
    files.append(File.generated(config, CONFIG_PAGE, content=config_reference()))
    return files

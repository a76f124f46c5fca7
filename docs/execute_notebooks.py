"""Runs the notebooks and stores each, outputs included, as docs/notebooks/NAME.ipynb for the site.

    .venv/bin/python docs/execute_notebooks.py               # every notebook whose copy is missing or stale
    .venv/bin/python docs/execute_notebooks.py 04_lenet5_fashion_mnist   # or the ones named

The site renders these copies and executes nothing; its build (docs/hooks.py) stops on a copy whose cells
differ from notebooks/NAME.ipynb, naming this command. Needs `bash setup.sh dev` (the notebooks' kernel).
"""

import sys

import nbclient
import nbformat
from hooks import NOTEBOOKS, RENDERED_NOTEBOOKS, stale_notebooks

from jaxcnn._files import write_atomically


def execute(name: str) -> None:
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    # record_timing=False: no timestamps in the cells' metadata, so a rerun changes only what it computed.
    client = nbclient.NotebookClient(
        notebook, timeout=1800, kernel_name="python3", record_timing=False,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )  # fmt: skip
    client.execute()
    RENDERED_NOTEBOOKS.mkdir(exist_ok=True)
    write_atomically(RENDERED_NOTEBOOKS / f"{name}.ipynb", nbformat.writes(notebook) + "\n")
    print(f"wrote docs/notebooks/{name}.ipynb", flush=True)


def main() -> None:
    for name in sys.argv[1:] or stale_notebooks():
        if not (NOTEBOOKS / f"{name}.ipynb").is_file():
            raise SystemExit(f"no notebook notebooks/{name}.ipynb")
        execute(name)


if __name__ == "__main__":
    main()

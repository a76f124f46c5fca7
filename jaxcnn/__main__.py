"""`python -m jaxcnn ...`: see `jaxcnn.cli`."""

from jaxcnn.cli import main

if __name__ == "__main__":  # only when run: a tool that imports every module imports this one too
    raise SystemExit(main())

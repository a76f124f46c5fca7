"""`python -m jaxcnn ...`: see `jaxcnn.cli`."""

from jaxcnn.cli import main

raise SystemExit(main())

"""``python -m workbench …``: see :mod:`workbench.runs.cli`."""

import sys

from workbench.runs.cli import main

if __name__ == "__main__":
    sys.exit(main())

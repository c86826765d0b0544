"""``python -m steerkit.cli``: the same as the ``steerkit`` command."""

import sys

from steerkit.cli import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m wirehead`` is the ``wirehead`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m conduit`` and the ``conduit`` console script."""

from __future__ import annotations

import sys

from conduit.cli import main

if __name__ == "__main__":
    sys.exit(main())

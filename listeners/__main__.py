"""Entry point: ``python -m listeners --help``."""

from __future__ import annotations

import sys

from listeners.cli import main

if __name__ == "__main__":
    sys.exit(main())

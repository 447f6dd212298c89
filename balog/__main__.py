"""``python -m balog``: the ``balog`` command."""

from __future__ import annotations

import sys

from balog.cli import main

if __name__ == "__main__":
    sys.exit(main())

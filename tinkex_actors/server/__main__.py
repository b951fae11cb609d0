"""``python -m tinkex_actors.server``: run the embedded server (see ``tinkex server --help``)."""

from __future__ import annotations

import sys

from tinkex_actors.server.cli import main

if __name__ == "__main__":
    sys.exit(main())

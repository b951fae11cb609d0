"""``python -m tinkex_actors.cli``: the ``tinkex`` command."""

from __future__ import annotations

import sys

from tinkex_actors.cli import main

sys.exit(main())

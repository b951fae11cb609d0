"""`make demo`: runs the main job on the embedded server.

Until the SDK and the server land, it shows what exists: the package and its wire schema.
"""

from __future__ import annotations

import sys

from tinkex_actors import __version__
from tinkex_actors.wire import tinker_public_pb2


def main() -> int:
    names = sorted(tinker_public_pb2.DESCRIPTOR.message_types_by_name)
    sys.stdout.write(f"tinkex_actors {__version__}\n")
    sys.stdout.write(f"wire schema: {len(names)} protobuf messages ({', '.join(names[:4])}, ...)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A tiny keep-alive HTTP/1.1 server for ``bench.transport`` (stdlib only: starts fast).

Answers every POST with the same small JSON body; prints its port on the first line of stdout
and serves until killed.
"""

from __future__ import annotations

import http.server
from typing import Any

ANSWER = b'{"request_id":"123","model_id":"m","type":"future"}'


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(ANSWER)))
        self.end_headers()
        self.wfile.write(ANSWER)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> None:
    """Serve on a free 127.0.0.1 port until killed."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

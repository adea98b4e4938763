"""A webhook receiver on loopback for tests and benchmarks: records every POST it gets, with
the time it arrived, and answers 500 while told to fail."""

import http.server
import threading
import time
from typing import Any


class Receiver:
    """An HTTP server recording what it is sent; it answers 500 while told to fail."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.fail_next = 0
        self.failing = False
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    failing = receiver.failing or receiver.fail_next > 0
                    receiver.fail_next = max(0, receiver.fail_next - 1)
                    receiver.received.append(
                        {
                            "at": time.time(),
                            "path": self.path,
                            "headers": dict(self.headers),
                            "body": body,
                            "ok": not failing,
                        }
                    )
                self.send_response(500 if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def delivered(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [item for item in self.received if item["ok"] and item["path"] == path]

    def attempts(self, path: str) -> int:
        with self.lock:
            return sum(1 for item in self.received if item["path"] == path)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

"""A minimal OpenAI-compatible ``/v1/chat/completions`` server on 127.0.0.1, for offline tests.

It answers with a Python function ``reply(body, hit) -> (status, payload, headers)``
(``hit`` counts requests from 0), so a test can script rate limits, server errors,
malformed replies or ordinary completions, and count how many requests arrived. It runs
in a daemon thread on a free port; use it as a context manager.

    def reply(body, hit):
        return 200, chat_reply("Task 10: Name a fruit."), {}

    with LocalChatServer(reply) as server:
        backend = OpenAIBackend(server.base_url, "test-model")
        ...
        assert server.hits == 1
"""

from __future__ import annotations

import http.server
import json
import threading
from typing import Callable

Reply = Callable[[dict, int], tuple]


def chat_reply(content, model: str = "local") -> dict:
    return {"id": "cmpl-local", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}


class LocalChatServer:
    def __init__(self, reply: Reply):
        self.reply = reply
        self.hits = 0
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    body = {}
                with outer._lock:
                    hit = outer.hits
                    outer.hits += 1
                    outer.bodies.append(body)
                    outer.headers.append(dict(self.headers))
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    status, payload, headers = 404, {"error": {"message": f"no route {self.path}"}}, {}
                else:
                    status, payload, headers = outer.reply(body, hit)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, str(v))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # keep test output quiet
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> "LocalChatServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

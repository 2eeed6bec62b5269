"""A small OpenAI-compatible chat server for tests; what it does depends on the last user message.

    python tests/harness/stub_openai.py --host 127.0.0.1 --port 8123 [--die-flag FILE]

Last user message (its first word):
    echo ...       answer with all user messages joined by " | " (shows what the prompt held)
    flaky:N ...    answer 503 to the first N attempts of this exact message, then echo
    status:C ...   always answer HTTP status C
    badjson ...    200 with a body that is not JSON
    nochoices ...  200 with JSON lacking "choices"
    slow:S ...     sleep S seconds, then echo
    huge ...       a 1 MB answer
    die ...        exit the process (with --die-flag FILE: only the first time, FILE remembers)
GET /health answers 200; GET /stats returns the Authorization headers and request counts seen.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class Stub:
    def __init__(self, die_flag: Path | None = None):
        self.lock = threading.Lock()
        self.attempts: dict[str, int] = {}
        self.auth: list[str] = []
        self.requests = 0
        self.die_flag = die_flag

    def handler(self):
        stub = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def _send(self, code: int, body: bytes, ctype: str = "application/json"):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path == "/health":
                    return self._send(200, b"")
                if self.path.endswith("/stats"):
                    with stub.lock:
                        return self._send(200, json.dumps({"auth": stub.auth, "requests": stub.requests}).encode())
                self._send(404, b"{}")

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                users = [m["content"] for m in body["messages"] if m["role"] == "user"]
                last = users[-1]
                word = last.split()[0] if last.split() else ""
                with stub.lock:
                    stub.requests += 1
                    stub.auth.append(self.headers.get("Authorization", ""))
                    n = stub.attempts[last] = stub.attempts.get(last, 0) + 1
                if word.startswith("flaky:") and n <= int(word.split(":")[1]):
                    return self._send(503, b'{"error": "overloaded"}')
                if word.startswith("status:"):
                    return self._send(int(word.split(":")[1]), json.dumps({"error": f"stub rejected: {last}"}).encode())
                if word == "badjson":
                    return self._send(200, b"<html>not json")
                if word == "nochoices":
                    return self._send(200, b'{"id": "x"}')
                if word.startswith("slow:"):
                    time.sleep(float(word.split(":")[1]))
                if word == "die" and (stub.die_flag is None or not stub.die_flag.exists()):
                    if stub.die_flag is not None:
                        stub.die_flag.touch()
                    os._exit(3)
                text = "x" * 1_000_000 if word == "huge" else " | ".join(users)
                out = {"id": "stub", "object": "chat.completion", "model": body["model"],
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                    "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": sum(len(u.split()) for u in users),
                                 "completion_tokens": len(text.split()), "total_tokens": 0}}
                self._send(200, json.dumps(out).encode())

        return H


def serve(host: str = "127.0.0.1", port: int = 0, die_flag: Path | None = None) -> tuple[ThreadingHTTPServer, Stub]:
    stub = Stub(die_flag)
    server = ThreadingHTTPServer((host, port), stub.handler())
    server.daemon_threads = True
    return server, stub


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--die-flag", type=Path)
    ap.add_argument("--start-delay", type=float, default=0.0)
    a = ap.parse_args()
    time.sleep(a.start_delay)
    print(f"stub serving on {a.host}:{a.port}", flush=True)
    serve(a.host, a.port, a.die_flag)[0].serve_forever()

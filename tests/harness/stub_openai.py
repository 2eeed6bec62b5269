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
    hang ...       stop answering anything, /health included (with --die-flag FILE: only the first time)

A request for a model named `stub-judge...` is answered as a judge: a verdict `Rating: [[N]]` (or, when
the request carries a JSON schema, `{"explanation", "rating"}`), N from 1 to 10 fixed by the prompt,
unless the prompt holds `JUDGE=<fault>`: `flaky:N` and `status:C` as above (until a test sets `fixed`),
`timeout-once:S` (the first attempt of this prompt sleeps S seconds), `badjson[:N]` (the first N
attempts), `garbage` (prose without a verdict), `huge` (1 MB without a verdict), `huge-rating` (1 MB, then a verdict).
GET /health answers 200; GET /stats returns the Authorization headers and request counts seen.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
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
        self.hung = threading.Event()
        self.fixed = False  # set by a test: judge `status:` faults stop (the endpoint was repaired)
        self.delay = 0.0  # set by a test: seconds every answer (not a verdict) takes

    def first_time(self) -> bool:
        """True unless --die-flag names a file that says this already happened (and remember it)."""
        if self.die_flag is None:
            return True
        if self.die_flag.exists():
            return False
        self.die_flag.touch()
        return True

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
                if stub.hung.is_set():
                    threading.Event().wait()  # never answers
                if self.path == "/health":
                    return self._send(200, b"")
                if self.path.endswith("/stats"):
                    with stub.lock:
                        return self._send(200, json.dumps({"auth": stub.auth, "requests": stub.requests}).encode())
                self._send(404, b"{}")

            def do_POST(self):
                if stub.hung.is_set():
                    threading.Event().wait()
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                users = [m["content"] for m in body["messages"] if m["role"] == "user"]
                last = users[-1]
                word = last.split()[0] if last.split() else ""
                with stub.lock:
                    stub.requests += 1
                    stub.auth.append(self.headers.get("Authorization", ""))
                    n = stub.attempts[last] = stub.attempts.get(last, 0) + 1
                if str(body.get("model", "")).startswith("stub-judge"):
                    return self._judge(body, users, n)
                time.sleep(stub.delay)
                if word == "hang" and stub.first_time():
                    stub.hung.set()
                    threading.Event().wait()
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
                if word == "die" and stub.first_time():
                    os._exit(3)
                self._answer(body, users, "x" * 1_000_000 if word == "huge" else " | ".join(users))

            def _answer(self, body, users, text):
                out = {"id": "stub", "object": "chat.completion", "model": body["model"],
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                    "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": sum(len(u.split()) for u in users),
                                 "completion_tokens": len(text.split()), "total_tokens": 0}}
                self._send(200, json.dumps(out).encode())

            def _judge(self, body, users, n):
                last = users[-1]
                m = re.search(r"JUDGE=(\S+)", " ".join(users))  # the follow-up after an unreadable verdict too
                fault = m.group(1) if m else "ok"
                kind, _, arg = fault.partition(":")
                if kind == "flaky" and n <= int(arg):
                    return self._send(503, b'{"error": "overloaded"}')
                if kind == "status" and not stub.fixed:
                    return self._send(int(arg), b'{"error": "stub judge rejected the request"}')
                if kind == "badjson" and (not arg or n <= int(arg)):
                    return self._send(200, b"<html>not json")
                if kind == "timeout-once" and n == 1:
                    time.sleep(float(arg))
                rating = stub_rating(last)
                if kind == "garbage":
                    text = "I have read the answer and have some thoughts about it, but no number."
                elif kind == "huge":
                    text = "blah " * 200_000
                elif kind == "huge-rating":
                    text = "blah " * 200_000 + f"Rating: [[{rating}]]"
                elif body.get("response_format"):
                    text = json.dumps({"explanation": "stub verdict", "rating": rating})
                else:
                    text = f"A fine answer. Rating: [[{rating}]]"
                self._answer(body, [last], text)

        return H


def stub_rating(prompt: str) -> int:
    """The stub judge's verdict on a prompt: 1 to 10, a fixed function of the text."""
    return 1 + int(hashlib.sha256(prompt.encode()).hexdigest(), 16) % 10


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):  # a client that gave up
            super().handle_error(request, client_address)


def serve(host: str = "127.0.0.1", port: int = 0, die_flag: Path | None = None) -> tuple[ThreadingHTTPServer, Stub]:
    stub = Stub(die_flag)
    server = _Server((host, port), stub.handler())
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

"""The server lifecycle of the vllm backend, on a stub OpenAI server: start, stop, crash, restart, hang.

The same code paths run with a real vLLM server in test_vllm.py; the stub makes the faults cheap.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import psutil
import pytest

from fusion.common.errors import FusevalError
from harness.backends import ChatRequest, GenParams, VLLMBackend, VLLMOptions
from harness.backends.vllm_server import port_in_use

STUB = [sys.executable, str(Path(__file__).with_name("stub_openai.py"))]


def stub_backend(tmp_path, *flags, **options) -> VLLMBackend:
    opts = {"startup_timeout_s": 30, "request_timeout_s": 10, **options}
    return VLLMBackend("stub-model", VLLMOptions(**opts), log_dir=tmp_path / "logs", command=[*STUB, *flags])


def ask(b, *texts):
    return b.generate([ChatRequest([{"role": "user", "content": t}], GenParams(max_new_tokens=4)) for t in texts])


def children() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if p.is_running() and p.status() != "zombie"]


def test_start_serve_stop_leaves_nothing_behind(tmp_path):
    before = children()
    b = stub_backend(tmp_path)
    with b:
        port = b.server.port
        assert b.server.options.host == "127.0.0.1" and port_in_use("127.0.0.1", port)
        assert [r.text for r in ask(b, "echo a", "echo b")] == ["echo a", "echo b"]
        assert b.server.log_path.parent == tmp_path / "logs"
    assert not port_in_use("127.0.0.1", port) and children() == before


def test_server_is_stopped_when_the_body_raises(tmp_path):
    b = stub_backend(tmp_path)
    with pytest.raises(RuntimeError, match="body failed"), b:
        pid, port = b.server.proc.pid, b.server.port
        raise RuntimeError("body failed")
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    assert not port_in_use("127.0.0.1", port)


def test_a_server_that_dies_is_restarted_once_and_the_requests_sent_again(tmp_path):
    b = stub_backend(tmp_path, "--die-flag", str(tmp_path / "died"))
    with b:
        first = b.server.port
        res = ask(b, "echo 1", "die now", "echo 2")
        assert [r.text for r in res] == ["echo 1", "die now", "echo 2"] and b.server.starts == 2
        assert b.server.port != first or b.server.alive()


def test_a_second_death_fails_with_the_log_tail(tmp_path):
    b = stub_backend(tmp_path)
    with b, pytest.raises(FusevalError, match=r"died again after a restart; log .*stub serving on"):
        ask(b, "die now")
    assert b.server.proc is None


def test_a_server_that_exits_while_starting(tmp_path):
    b = stub_backend(tmp_path, "--no-such-flag")
    with pytest.raises(FusevalError, match=r"exited with code 2 while starting; log .*unrecognized arguments"):
        b.start()


def test_a_server_that_never_gets_ready_is_killed(tmp_path):
    before = children()
    b = stub_backend(tmp_path, "--start-delay", "60", startup_timeout_s=1.5)
    with pytest.raises(FusevalError, match=r"not ready after 1.5 s"):
        with b:
            pass
    assert children() == before


def test_a_port_already_in_use_is_refused(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(FusevalError, match=f"port {port} on 127.0.0.1 is already in use"):
            stub_backend(tmp_path, port=port).start()


def test_a_hanging_request_times_out(tmp_path):
    b = stub_backend(tmp_path, request_timeout_s=0.5)
    with b:
        slow, fast = ask(b, "slow:3 x", "echo y")
    assert not slow.ok and "timed out" in slow.error and fast.ok


def test_sigterm_to_fuseval_stops_the_server(tmp_path):
    """A CI timeout or `kill` sends SIGTERM: the server must not outlive us."""
    import signal
    import subprocess
    import time

    script = tmp_path / "hold.py"
    script.write_text(f"""
import sys, time
sys.path[:0] = {[str(Path(__file__).resolve().parents[2])]!r}
from harness.cli import exit_on_sigterm
from tests.harness.test_vllm_server import stub_backend
from pathlib import Path
exit_on_sigterm()
with stub_backend(Path({str(tmp_path)!r})) as b:
    print(b.server.proc.pid, b.server.port, flush=True)
    time.sleep(60)
""")
    p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    pid, port = map(int, p.stdout.readline().split())
    assert psutil.pid_exists(pid)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=30) == 128 + signal.SIGTERM
    time.sleep(0.2)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    assert not port_in_use("127.0.0.1", port)


def test_a_server_that_hangs_is_killed_restarted_once_and_the_requests_sent_again(tmp_path):
    b = stub_backend(tmp_path, "--die-flag", str(tmp_path / "hung"), request_timeout_s=2)
    with b:
        first_pid = b.server.proc.pid
        res = ask(b, "echo 1", "hang now", "echo 2")
        assert [r.text for r in res] == ["echo 1", "hang now", "echo 2"] and b.server.starts == 2
        assert not psutil.pid_exists(first_pid) or psutil.Process(first_pid).status() == "zombie"


def test_a_second_hang_fails_with_the_log_tail(tmp_path):
    b = stub_backend(tmp_path, request_timeout_s=1)
    with b, pytest.raises(FusevalError, match=r"hung again after a restart; log .*stub serving on"):
        ask(b, "hang now")
    assert b.server.proc is None

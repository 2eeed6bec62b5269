"""The code sandbox: real subprocesses, checked for limits and isolation (only 127.0.0.1 is ever contacted)."""

from __future__ import annotations

import os
import socket
import tempfile
import time

import pytest

from harness.judges import sandbox
from harness.judges.sandbox import namespaces_available, run_python

# Every isolation test runs with the audit-hook layer alone, and also under the namespace where it works.
MODES = [pytest.param(False, id="hooks")] + ([pytest.param(True, id="netns")] if namespaces_available() else [])


def test_passing_program_with_stdin():
    r = run_python("import sys\nprint(sys.stdin.read().upper())", stdin="hello")
    assert (r.returncode, r.stdout, r.timed_out, r.memory_exceeded) == (0, "HELLO\n", False, False)
    assert r.namespaced == namespaces_available()


def test_failing_assert_reports_the_program_line():
    r = run_python("x = 1\nassert x == 2, 'x is wrong'\n")
    assert r.returncode == 1
    assert "AssertionError: x is wrong" in r.stderr and 'File "main.py", line 2' in r.stderr
    assert "_run" not in r.stderr  # the preamble's own frame is hidden


@pytest.mark.parametrize("ns", MODES)
def test_infinite_loop_is_killed_at_the_timeout(ns):
    t0 = time.monotonic()
    r = run_python("while True: pass", timeout_s=1, namespaces=ns)
    assert r.timed_out and r.returncode == -9 and not r.memory_exceeded
    assert time.monotonic() - t0 < 3


@pytest.mark.parametrize("ns", MODES)
def test_unbounded_allocation_is_stopped(ns):
    r = run_python("x = []\nwhile True: x.append(' ' * 10**6)", timeout_s=10, memory_mb=128, namespaces=ns)
    assert r.memory_exceeded and r.returncode != 0 and not r.timed_out
    assert r.wall_s < 10


def test_printing_forever_is_capped():
    r = run_python("while True: print('x' * 1000)", timeout_s=5, output_limit=10_000)
    assert r.output_exceeded and r.returncode == -9 and not r.timed_out
    assert len(r.stdout) == 10_000 and r.wall_s < 5


def test_limits_are_set_and_cannot_be_raised():
    code = ("import resource\nprint(resource.getrlimit(resource.RLIMIT_AS)[1] >> 20)\n"
            "print(resource.getrlimit(resource.RLIMIT_CORE))\n"
            "resource.setrlimit(resource.RLIMIT_AS, (-1, -1))\n")
    r = run_python(code, memory_mb=200)
    assert r.stdout.split("\n")[:2] == ["200", "(0, 0)"]
    assert r.returncode == 1 and "PermissionError" in r.stderr


@pytest.fixture
def listener():
    """A socket listening on 127.0.0.1 that the sandboxed program must not reach."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    s.setblocking(False)
    yield s
    s.close()


def _assert_nobody_connected(listener: socket.socket) -> None:
    with pytest.raises(BlockingIOError):
        listener.accept()


@pytest.mark.parametrize("ns", MODES)
def test_socket_connect_is_blocked(ns, listener):
    port = listener.getsockname()[1]
    code = f"import socket\ns = socket.socket()\ns.settimeout(1)\ns.connect(('127.0.0.1', {port}))\nprint('connected')"
    r = run_python(code, namespaces=ns)
    assert r.returncode == 1 and "connected" not in r.stdout
    assert "PermissionError: sandbox: socket.connect" in r.stderr
    _assert_nobody_connected(listener)


@pytest.mark.skipif(not namespaces_available(), reason="unprivileged network namespaces do not work here")
def test_network_namespace_alone_blocks_loopback(listener):
    port = listener.getsockname()[1]
    code = f"import socket\ns = socket.socket()\ns.settimeout(1)\ns.connect(('127.0.0.1', {port}))\nprint('connected')"
    r = run_python(code, namespaces=True, guard=False)
    assert r.returncode == 1 and "connected" not in r.stdout and "OSError" in r.stderr
    _assert_nobody_connected(listener)


def test_name_lookup_is_blocked():
    r = run_python("import socket\nsocket.getaddrinfo('localhost', 80)")
    assert r.returncode == 1 and "socket.getaddrinfo" in r.stderr


@pytest.mark.parametrize("ns", MODES)
@pytest.mark.parametrize("how", [
    "open(TARGET, 'w').write('x')",
    "open(TARGET, 'a').write('x')",
    "import os\nos.close(os.open(TARGET, os.O_CREAT | os.O_WRONLY))",
    "import pathlib\npathlib.Path(TARGET).write_text('x')",
    "import os\nos.symlink(TARGET, 'link')\nopen('link', 'w').write('x')",
    "import os\nos.chdir(os.path.dirname(TARGET))\nopen(os.path.basename(TARGET), 'w').write('x')",
    "import shutil\nopen('here', 'w').write('x')\nshutil.copyfile('here', TARGET)",
    "import os\nopen('here', 'w').write('x')\nos.rename('here', TARGET)",
    "import os\nfd = os.open(os.path.dirname(TARGET), os.O_RDONLY)\n"
    "os.close(os.open('outside.txt', os.O_CREAT | os.O_WRONLY, dir_fd=fd))",
])
def test_writing_outside_the_temp_dir_fails(ns, how, tmp_path):
    target = tmp_path / "outside.txt"
    r = run_python(f"TARGET = {str(target)!r}\n{how}\n", namespaces=ns)
    assert r.returncode == 1 and "PermissionError: sandbox" in r.stderr
    assert not target.exists()


@pytest.mark.parametrize("how", [
    "import os\nos.remove(TARGET)",
    "import shutil\nshutil.rmtree(os.path.dirname(TARGET))",
    "import os\nos.link(TARGET, 'hard')\nopen('hard', 'w').write('changed')",
    "import os\nos.truncate(TARGET, 0)",
    "import os\nos.chmod(TARGET, 0o777)",
])
def test_existing_files_outside_are_left_alone(how, tmp_path):
    target = tmp_path / "keep.txt"
    target.write_text("original")
    mode = target.stat().st_mode
    r = run_python(f"import os\nTARGET = {str(target)!r}\n{how}\n")
    assert r.returncode == 1 and "PermissionError: sandbox" in r.stderr
    assert target.read_text() == "original" and target.stat().st_mode == mode


def test_reading_outside_is_allowed(tmp_path):
    (tmp_path / "data.txt").write_text("42")
    r = run_python(f"print(open({str(tmp_path / 'data.txt')!r}).read())")
    assert (r.returncode, r.stdout) == (0, "42\n"), r.stderr


def test_writing_inside_the_temp_dir_works():
    code = ("import os, tempfile\nos.mkdir('sub')\nopen('sub/a.txt', 'w').write('hi')\n"
            "with tempfile.NamedTemporaryFile('w', delete=False) as f: f.write('t')\n"
            "os.rename('sub/a.txt', 'b.txt')\nos.remove(f.name)\nprint(open('b.txt').read(), os.listdir('.'))")
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("hi ") and "b.txt" in r.stdout


@pytest.mark.parametrize("ns", MODES)
@pytest.mark.parametrize("how", [
    "import os\nos.system('true')",
    "import subprocess\nsubprocess.run(['true'])",
    "import os\nos.fork()",
    "import os\nos.execv('/bin/true', ['true'])",
    "import os\nos.kill(1, 0)",
    "import ctypes",
    "import importlib\nimportlib.import_module('ctypes')",
])
def test_processes_signals_and_ctypes_are_blocked(ns, how):
    r = run_python(how, namespaces=ns)
    assert r.returncode == 1 and "PermissionError: sandbox" in r.stderr


def test_libraries_may_still_use_ctypes_internally():
    r = run_python("import numpy as np\nprint(int(np.arange(4).sum()))")
    assert (r.returncode, r.stdout) == (0, "6\n"), r.stderr


def test_parent_environment_does_not_leak(monkeypatch):
    monkeypatch.setenv("FAKE_API_KEY", "sk-should-not-leak")
    r = run_python("import os\nprint(sorted(os.environ))\nprint(os.environ.get('FAKE_API_KEY'))")
    assert r.returncode == 0 and "sk-should-not-leak" not in r.stdout and "FAKE_API_KEY" not in r.stdout


def test_temp_dir_is_the_cwd_and_is_removed():
    r = run_python("import os\nopen('left.txt', 'w').write('x')\nprint(os.getcwd())")
    cwd = r.stdout.strip()
    assert r.returncode == 0 and os.path.basename(cwd).startswith("fuseval-sandbox-")
    assert os.path.realpath(os.path.dirname(cwd)) == os.path.realpath(tempfile.gettempdir())
    assert not os.path.exists(cwd)


def test_temp_dir_is_removed_after_a_timeout():
    r = run_python("import os, sys\nprint(os.getcwd(), flush=True)\nwhile True: pass", timeout_s=1)
    assert r.timed_out and not os.path.exists(r.stdout.strip())


def test_probe_falls_back_without_unshare(monkeypatch):
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    sandbox.namespaces_available.cache_clear()
    try:
        assert sandbox.namespaces_available() is False
        r = run_python("print('ok')")
        assert (r.returncode, r.stdout, r.namespaced) == (0, "ok\n", False)
    finally:
        monkeypatch.undo()
        sandbox.namespaces_available.cache_clear()


def test_sandbox_that_cannot_start_raises(monkeypatch, tmp_path):
    fake = tmp_path / "unshare"  # fails the way unshare does when the namespace quota is spent
    fake.write_text("#!/bin/sh\necho 'unshare: unshare failed: No space left on device' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: str(fake) if name == "unshare" else None)
    with pytest.raises(OSError, match="sandbox could not start"):
        run_python("print('never')", namespaces=True)

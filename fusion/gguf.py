"""GGUF checkpoints (llama.cpp's format) into Hugging Face safetensors directories.

    fuseval import-gguf SmolLM2-135M-Instruct.Q4_1.gguf models/smollm2 --dtype bfloat16
    import_gguf("x.gguf", "out")        # from Python; fusion.assets.convert_tokenizer for a vocab-only GGUF

Plan first: `read_header` parses the header with `struct` alone (fast even for 256k-token vocabularies,
where gguf's own reader takes seconds); `check_supported` refuses what transformers' GGUF loader cannot
read (a file that is not GGUF or is cut short, an architecture, a quantization) in one line naming the
file. Then transformers dequantizes the weights and we write them with `ShardedWriter` (`save_pretrained`
refuses a GGUF-quantized model), with the tokenizer and chat template as the GGUF holds them, a
generation config with every end token, and `fuseval_recipe.yml`. No pickle, no remote code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import mmap
import os
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from fusion.common.errors import FusevalError
from fusion.common.files import atomic_output_dir, atomic_write_text

log = logging.getLogger(__name__)

MAGIC = b"GGUF"
# GGUF metadata value types (ggml/docs/gguf.md): code -> struct format; 8 is a string, 9 an array.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
# GGUF architecture names that transformers' loader knows under another name (load_gguf_checkpoint).
_ARCH_ALIASES = {"qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe", "gpt-oss": "gpt_oss",
                 "minimax-m2": "minimax_m2", "t5encoder": "t5"}
# Token texts that end generation, as llama.cpp's llama-vocab.cpp lists them (besides the eos/eot/eom ids);
# its fill-in-the-middle tokens are left out: they end code infilling, not a chat turn.
END_TEXTS = frozenset(("<|eot_id|> <|im_end|> <|end|> <|return|> <|call|> <|flush|> <|calls|> <end_of_turn> "
                       "<|endoftext|> </s> <|eom_id|> <EOT> _<EOT> [EOT] [EOS] <|end_of_text|> <end_of_utterance> "
                       "<eos> <turn|> <|tool_response> <｜end▁of▁sentence｜> [e~[").split())


@dataclass(frozen=True)
class TensorEntry:
    """One tensor as the GGUF header describes it."""

    name: str
    shape: tuple[int, ...]  # GGUF order: fastest-varying dimension first
    type_code: int  # ggml type (GGMLQuantizationType value)
    offset: int  # bytes from the start of the data section


@dataclass
class Header:
    """A GGUF file's metadata and tensor table, read without touching the tensor data."""

    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: list[TensorEntry]
    data_start: int
    file_size: int

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", ""))


def _fail(path: Path, problem: str) -> FusevalError:  # every message names the file first
    return FusevalError(f"{path}: {problem}")


class _Cursor:
    """Reads GGUF's little-endian values from a buffer, position by position."""

    def __init__(self, buf: Any, pos: int = 0):
        self.buf, self.pos = buf, pos

    def scalar(self, fmt: str) -> Any:
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.scalar("<Q")
        if self.pos + n > len(self.buf):
            raise ValueError("string runs past the end of the file")
        self.pos += n
        return bytes(self.buf[self.pos - n:self.pos]).decode("utf-8", errors="replace")

    def value(self, kind: int) -> Any:
        if kind == _ARRAY:
            item, n = self.scalar("<I"), self.scalar("<Q")
            if n > len(self.buf):
                raise ValueError(f"array of {n} items cannot fit")
            return [self.value(item) for _ in range(n)]
        if kind != _STRING and kind not in _SCALARS:
            raise ValueError(f"unknown metadata type {kind}")
        return self.string() if kind == _STRING else self.scalar(_SCALARS[kind])


def read_header(path: str | os.PathLike) -> Header:
    """Parse a GGUF file's header (version 2 or 3, little-endian); a file that is not one is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise _fail(path, "no such file")
    with open(path, "rb") as f:
        head = f.read(8)
        size = path.stat().st_size
        if head[:4] != MAGIC:
            raise _fail(path, "not a GGUF file (it does not start with the bytes 'GGUF')" if head else
                        "not a GGUF file (it is empty)")
        if len(head) < 8:
            raise _fail(path, f"truncated GGUF file: {size} bytes")
        version = struct.unpack_from("<I", head, 4)[0]
        if version not in (2, 3):
            raise _fail(path, f"GGUF version {version} is not supported (2 and 3 are, little-endian)")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            cur = _Cursor(buf, 8)
            try:
                n_tensors, n_kv = cur.scalar("<Q"), cur.scalar("<Q")
                if n_tensors > size or n_kv > size:
                    raise ValueError("impossible counts")
                metadata = {cur.string(): cur.value(cur.scalar("<I")) for _ in range(n_kv)}  # key read first
                tensors = []
                for _ in range(n_tensors):
                    name = cur.string()
                    dims = tuple(cur.scalar("<Q") for _ in range(cur.scalar("<I")))
                    tensors.append(TensorEntry(name, dims, cur.scalar("<I"), cur.scalar("<Q")))
            except (struct.error, ValueError, OverflowError, MemoryError) as e:
                raise _fail(path, f"truncated or corrupt GGUF header (at byte {cur.pos} of {size}: {e})") from None
    align = int(metadata.get("general.alignment", 32)) or 32
    return Header(path, version, metadata, tensors, -(-cur.pos // align) * align, size)


def _packed_path() -> tuple[set[str], set[int]]:
    """Architectures transformers (5.19+) loads through its own GGUF path, and the ggml types that path unpacks."""
    try:
        from transformers.integrations.gguf import GGUF_ARCHS
        from transformers.integrations.gguf.dequant import GGML_BLOCK
    except ImportError:  # older transformers: every architecture goes through gguf's dequantize
        return set(), set()
    return set(GGUF_ARCHS), set(GGML_BLOCK) | {0, 1, 30}  # + F32, F16, BF16


@cache
def _can_dequantize(type_code: int) -> bool:
    """Whether gguf's `dequantize` (transformers' legacy path) reads this ggml type: try it on one zero block."""
    import numpy as np
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    from gguf.quants import dequantize

    try:
        qtype = GGMLQuantizationType(type_code)
        dequantize(np.zeros((1, GGML_QUANT_SIZES[qtype][1]), np.uint8), qtype)
    except (ValueError, KeyError, NotImplementedError):
        return False
    return True


def _type_name(type_code: int) -> str:
    from gguf import GGMLQuantizationType

    known = type_code in GGMLQuantizationType._value2member_map_
    return GGMLQuantizationType(type_code).name if known else f"unknown type {type_code}"


def _tensor_bytes(t: TensorEntry) -> int:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    block, size = GGML_QUANT_SIZES[GGMLQuantizationType(t.type_code)]
    return math.prod(t.shape) // block * size


def supported_architectures() -> list[str]:
    """The GGUF architectures transformers' GGUF loader reads, as this transformers names them."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    return sorted((set(GGUF_SUPPORTED_ARCHITECTURES) | _packed_path()[0]) - {"general", "tokenizer"})


def check_supported(header: Header, need_tensors: bool = True) -> None:
    """Refuse, in one line naming the file, what transformers cannot load: tensor data that runs past the end of
    the file (a truncated download), the architecture, a tensor's quantization."""
    from gguf import GGMLQuantizationType

    path, arch = header.path, header.architecture
    known = [t for t in header.tensors if t.type_code in GGMLQuantizationType._value2member_map_]
    end = max((header.data_start + t.offset + _tensor_bytes(t) for t in known), default=0)
    if end > header.file_size:
        raise _fail(path, f"truncated: its tensors need {end} bytes, the file has {header.file_size}")
    supported = supported_architectures()
    if _ARCH_ALIASES.get(arch, arch) not in supported:
        raise _fail(path, f"architecture {arch or '(none)'!r} is not supported by transformers' GGUF loader "
                          f"(supported: {', '.join(supported)})")
    if need_tensors and not header.tensors:
        raise _fail(path, "holds no tensors (a vocabulary-only GGUF?); there is no model to import")
    packed_archs, packed_types = _packed_path()
    readable = (lambda code: code in packed_types) if arch in packed_archs else _can_dequantize
    bad = [t for t in header.tensors if not readable(t.type_code)]
    if bad:
        kinds = sorted({_type_name(t.type_code) for t in bad})
        raise _fail(path, f"quantization {', '.join(kinds)} (e.g. tensor {bad[0].name}) cannot be dequantized by "
                          f"transformers' GGUF loader; re-quantize to e.g. Q8_0, Q4_K_M, F16 or BF16")


def end_token_ids(header: Header) -> list[int]:
    """Every token that ends generation: eos, eot and eom ids, then tokens whose text llama.cpp treats as an end."""
    meta = header.metadata
    ids = [int(meta[k]) for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
                                  "tokenizer.ggml.eom_token_id") if k in meta]
    # By text, like llama.cpp, but only special tokens (control 3, user-defined 4) where the file types them:
    # Qwen2's vocabulary also holds a plain "</s>" that is ordinary text.
    types = meta.get("tokenizer.ggml.token_type") or []
    ids += [i for i, text in enumerate(meta.get("tokenizer.ggml.tokens", []))
            if text in END_TEXTS and (i >= len(types) or types[i] in (3, 4))]
    return list(dict.fromkeys(ids))


def chat_templates(header: Header) -> str | dict[str, str] | None:
    """The chat template(s) as the GGUF holds them: one string, or named ones with the default as "default"."""
    meta = header.metadata
    named = {k.removeprefix("tokenizer.chat_template."): v for k, v in meta.items()
             if k.startswith("tokenizer.chat_template.")}
    main = meta.get("tokenizer.chat_template")
    if not named:
        return main
    return {**({"default": main} if main is not None else {}), **named}


def _load_error(path: Path, e: Exception) -> FusevalError:
    log.debug("transformers could not load %s", path, exc_info=e)
    text = " ".join(str(e).split())
    return _fail(path, f"transformers cannot load it: {type(e).__name__}: {text[:300]}")


def load_tokenizer(header: Header) -> Any:
    """The GGUF's tokenizer as transformers builds it, with the chat template(s) exactly as the GGUF holds them."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(header.path.parent, gguf_file=header.path.name)
    except Exception as e:  # transformers raises many kinds (ValueError, config validation errors, ...)
        raise _load_error(header.path, e) from None
    tok.chat_template = chat_templates(header)
    return tok


def save_tokenizer(tok: Any, header: Header, out_dir: Path) -> None:
    """tokenizer.json and tokenizer_config.json (with the chat template), checked against the GGUF's template."""
    tok.save_pretrained(out_dir, save_jinja_files=False)
    saved = json.loads((out_dir / "tokenizer_config.json").read_text()).get("chat_template")
    if isinstance(saved, list):  # named templates are saved as [{"name": ..., "template": ...}]
        saved = {t["name"]: t["template"] for t in saved}
    if saved != chat_templates(header):
        raise _fail(header.path, "the saved chat template differs from the GGUF's")



@dataclass
class ImportResult:
    """What `import_gguf` wrote."""

    out_dir: Path
    architecture: str
    model_class: str
    parameters: int  # unique parameters written (a tied tensor once)
    n_tensors: int
    total_bytes: int
    tied: dict[str, str]  # tensor left out -> the tensor it is tied to
    end_tokens: list[int]
    sha256: str
    seconds: dict[str, float] = field(default_factory=dict)  # per step: check, load, write


def _load_model(header: Header, dtype: Any) -> Any:
    """The model (causal LM, else seq2seq: T5) with every weight dequantized: transformers 5.19+ would keep blocks
    packed where `kernels` is installed, and a packed model's state dict is not a checkpoint."""
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES as CAUSAL

    path = header.path
    extra = {}
    if hasattr(transformers, "GgufConfig"):
        extra["quantization_config"] = transformers.GgufConfig(dequantize=True)
    try:
        config = transformers.AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
        auto = transformers.AutoModelForCausalLM if config.model_type in CAUSAL else transformers.AutoModelForSeq2SeqLM
        return auto.from_pretrained(path.parent, gguf_file=path.name, config=config, dtype=dtype, **extra)
    except Exception as e:  # as in load_tokenizer: turn transformers' many kinds into one line
        raise _load_error(path, e) from None


def _unique_tensors(model: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """The state dict with each storage once, and which names were left out as tied to which. Only the output
    embedding is left out, and only when the config ties it (`from_pretrained` re-ties it); others are copied."""
    out = model.get_output_embeddings()
    out_name = next((f"{n}.weight" for n, m in model.named_modules() if out is not None and m is out), None)
    tie = bool(getattr(model.config, "tie_word_embeddings", False))
    tensors, tied, seen = {}, {}, {}  # type: ignore[var-annotated]
    for name, t in model.state_dict().items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if key in seen and name == out_name and tie:
            tied[name] = seen[key]
            continue
        seen.setdefault(key, name)
        tensors[name] = t
    return tensors, tied


def _write_configs(model: Any, dtype: Any, ends: list[int], out_dir: Path) -> None:
    """config.json without the quantization settings, and generation_config.json with every end token."""
    from transformers import GenerationConfig

    from fusion.io import dtype_name

    cfg = model.config.to_diff_dict()
    cfg.pop("quantization_config", None)
    cfg.update(architectures=[type(model).__name__], dtype=dtype_name(dtype))
    atomic_write_text(out_dir / "config.json", json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    gen = GenerationConfig(bos_token_id=cfg.get("bos_token_id"), pad_token_id=cfg.get("pad_token_id"),
                           eos_token_id=ends if len(ends) > 1 else (ends[0] if ends else None))
    atomic_write_text(out_dir / "generation_config.json", gen.to_json_string(use_diff=True))


def _recipe(header: Header, result: ImportResult, dtype: Any, tokenizer: Any) -> dict[str, Any]:
    from importlib.metadata import version

    from fusion import __version__
    from fusion.io import dtype_name

    meta = header.metadata
    return {
        "fuseval_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "import-gguf",
        "source": {"gguf": str(header.path.resolve()), "sha256": result.sha256, "bytes": header.file_size,
                   "gguf_version": header.version, "architecture": header.architecture,
                   "name": meta.get("general.name"), "license": meta.get("general.license"),
                   "tensor_types": dict(Counter(_type_name(t.type_code) for t in header.tensors).most_common())},
        "resolved": {"model_class": result.model_class, "dtype": dtype_name(dtype), "parameters": result.parameters,
                     "tied": result.tied, "vocab_size": len(tokenizer),
                     "end_tokens": [{"id": i, "token": tokenizer.convert_ids_to_tokens(i)} for i in result.end_tokens]},
        "versions": {"fuseval": __version__, **{name: version(name) for name in ("transformers", "gguf", "torch")}},
    }


def import_gguf(path: str | Path, out_dir: str | Path, dtype: str = "bfloat16", force: bool = False,
                shard_bytes: int | None = None, say: Callable[[str], None] | None = None) -> ImportResult:
    """Turn a GGUF checkpoint into a Hugging Face safetensors directory (written atomically) with a recipe."""
    import torch
    import yaml

    from fusion.io import DEFAULT_SHARD_BYTES, ShardedWriter, parse_dtype
    from fusion.merge.finish import RECIPE_NAME

    say, t0, torch_dtype = say or log.info, time.perf_counter(), parse_dtype(dtype)
    if Path(out_dir).exists() and not force:  # before minutes of loading, not after
        raise FusevalError(f"{out_dir}: output directory exists; pass --force to replace it")
    header = read_header(path)
    check_supported(header)
    with open(header.path, "rb") as f:
        sha256 = hashlib.file_digest(f, "sha256").hexdigest()
    result = ImportResult(Path(out_dir), header.architecture, "", 0, 0, 0, {}, end_token_ids(header), sha256)
    tok = load_tokenizer(header)
    result.seconds["check"] = time.perf_counter() - t0
    say(f"{header.path.name}: {header.architecture}, {len(header.tensors)} tensors; dequantizing with transformers")
    model = _load_model(header, torch_dtype)
    result.model_class = type(model).__name__
    tok.model_max_length = getattr(model.config, "max_position_embeddings", tok.model_max_length)
    tensors, result.tied = _unique_tensors(model)
    for name, t in tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise _fail(header.path, f"tensor {name} holds NaN or Inf after dequantization")
    result.n_tensors, result.parameters = len(tensors), sum(t.numel() for t in tensors.values())
    result.seconds["load"] = time.perf_counter() - t0 - result.seconds["check"]
    entries = [(n, tuple(t.shape), torch_dtype if t.is_floating_point() else t.dtype) for n, t in tensors.items()]
    say(f"writing {len(entries)} tensors ({torch_dtype}) to {out_dir}")
    with atomic_output_dir(out_dir, force=force) as tmp:
        with ShardedWriter(tmp, entries, max_shard_bytes=shard_bytes or DEFAULT_SHARD_BYTES) as writer:
            for name, t in tensors.items():
                writer.write(name, t)
            writer.finish()
        result.total_bytes = writer.total_bytes
        _write_configs(model, torch_dtype, result.end_tokens, tmp)
        save_tokenizer(tok, header, tmp)
        result.seconds["write"] = time.perf_counter() - t0 - result.seconds["check"] - result.seconds["load"]
        atomic_write_text(tmp / RECIPE_NAME, yaml.safe_dump(_recipe(header, result, torch_dtype, tok),
                                                            sort_keys=False, allow_unicode=True))
    return result

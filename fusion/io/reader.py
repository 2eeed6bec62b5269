"""Lazy, memory-mapped reads of a Hugging Face checkpoint, one tensor at a time.

    reader = CheckpointReader("models/a")          # index json or a single model.safetensors
    t = reader.get("model.layers.0.mlp.up_proj.weight")
    with reader.mapped(name) as view: ...          # zero-copy, read-only, for reading in blocks

The reader maps one tensor's byte range at a time, converts it straight into the requested dtype
and unmaps it, so only the tensors in use count toward resident memory (a file mapped for a whole
run keeps every page it touched resident).
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from fusion.common.errors import FusevalError
from fusion.io.dtypes import SAFETENSORS_DTYPES, element_count
from fusion.io.model_dir import INDEX_NAME, SINGLE_NAME


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives and what it is, read from a safetensors header."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    file: Path
    offset: int = 0  # absolute byte offset of the data in `file`

    @property
    def nbytes(self) -> int:
        return element_count(self.shape) * self.dtype.itemsize



def read_safetensors_header(path: Path) -> dict[str, TensorInfo]:
    """Parse a safetensors header (no tensor data read) and check it against the file size."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw_len = f.read(8)
            if len(raw_len) < 8:
                raise FusevalError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
            (hlen,) = struct.unpack("<Q", raw_len)
            if hlen > size - 8:
                raise FusevalError(f"{path}: truncated safetensors file (its header declares {hlen} bytes, "
                                   f"{size - 8} follow)")
            if hlen > 100 * 2**20:
                raise FusevalError(f"{path}: corrupt safetensors header (declared length {hlen} bytes)")
            header = json.loads(f.read(hlen))
    except FileNotFoundError:
        raise FusevalError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise FusevalError(f"{path}: corrupt safetensors header (invalid JSON: {e.msg} at byte {e.pos})") from None
    except UnicodeDecodeError:
        raise FusevalError(f"{path}: corrupt safetensors header (not UTF-8)") from None
    if not isinstance(header, dict):
        raise FusevalError(f"{path}: corrupt safetensors header (the header is not a JSON object)")
    out: dict[str, TensorInfo] = {}
    data_len = size - 8 - hlen
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            code = meta["dtype"]
            shape = tuple(int(d) for d in meta["shape"])
            begin, end = (int(x) for x in meta["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise FusevalError(f"{path}: tensor {name!r} has a malformed header entry") from None
        if code not in SAFETENSORS_DTYPES:
            raise FusevalError(f"{path}: tensor {name!r} has unsupported dtype {code!r} "
                               f"(supported: {', '.join(SAFETENSORS_DTYPES)})")
        dtype = SAFETENSORS_DTYPES[code]
        if not 0 <= begin <= end <= data_len or end - begin != element_count(shape) * dtype.itemsize:
            raise FusevalError(f"{path}: tensor {name!r} lies outside the file (truncated download?)")
        out[name] = TensorInfo(name, shape, dtype, path, 8 + hlen + begin)
    return out


class CheckpointReader:
    """Lazy, memory-mapped access to the tensors of a Hugging Face model directory."""

    def __init__(self, path: str | os.PathLike, allow_pickle: bool = False):
        self.path = Path(path)
        if not self.path.is_dir():
            raise FusevalError(f"{self.path}: model directory not found")
        self._infos: dict[str, TensorInfo] = {}
        self._pickled: dict[str, torch.Tensor] | None = None
        self.config = self._read_config()
        files = self._safetensors_files()
        if files:
            for f in files:
                for name, info in read_safetensors_header(f).items():
                    self._infos.setdefault(name, info)
            self._check_index_covers()
        else:
            self._load_pickle(allow_pickle)

    def _read_config(self) -> dict:
        cfg = self.path / "config.json"
        if not cfg.exists():
            return {}
        try:
            return json.loads(cfg.read_text())
        except json.JSONDecodeError as e:
            raise FusevalError(f"{cfg}: invalid JSON ({e.msg} at line {e.lineno})") from None

    def _safetensors_files(self) -> list[Path]:
        index = self.path / INDEX_NAME
        if index.exists():
            try:
                self._weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise FusevalError(f"{index}: malformed index (needs a 'weight_map' object)") from None
            files = sorted({self.path / f for f in self._weight_map.values()})
            for f in files:
                if not f.exists():
                    raise FusevalError(f"{f}: shard listed in {INDEX_NAME} is missing")
            return files
        self._weight_map = {}
        single = self.path / SINGLE_NAME
        if single.exists():
            return [single]
        return sorted(self.path.glob("*.safetensors"))

    def _check_index_covers(self) -> None:
        for name, fname in self._weight_map.items():
            info = self._infos.get(name)
            if info is None or info.file.name != fname:
                raise FusevalError(f"{self.path / fname}: tensor {name!r} listed in {INDEX_NAME} is not in that shard")

    def _load_pickle(self, allow_pickle: bool) -> None:
        bins = sorted(self.path.glob("pytorch_model*.bin")) or sorted(self.path.glob("*.bin"))
        if not bins:
            raise FusevalError(f"{self.path}: no *.safetensors or *.bin weights found")
        if not allow_pickle:
            raise FusevalError(f"{bins[0]}: pickle checkpoint refused (it can run code); convert to safetensors "
                               "or pass --allow-pickle")
        self._pickled = {}
        for b in bins:
            # Opted in: still restrict unpickling to tensors, memory-mapped.
            state = torch.load(b, map_location="cpu", mmap=True, weights_only=True)
            for name, t in state.items():
                self._pickled[name] = t
                self._infos[name] = TensorInfo(name, tuple(t.shape), t.dtype, b)

    @property
    def names(self) -> list[str]:
        return list(self._infos)

    def info(self, name: str) -> TensorInfo:
        try:
            return self._infos[name]
        except KeyError:
            raise FusevalError(f"{self.path}: tensor {name!r} not found") from None

    @contextmanager
    def mapped(self, name: str) -> Iterator[torch.Tensor]:
        """A read-only, zero-copy view of one tensor, valid inside the `with` block.

        Use it to read a tensor piece by piece (slices convert straight out of the page cache);
        `get` for a tensor of your own. Never write to the view: its pages are mapped read-only,
        and a write kills the process (SIGSEGV).
        """
        info = self.info(name)
        if self._pickled is not None:
            yield self._pickled[name]
            return
        numel = element_count(info.shape)
        if numel == 0:
            yield torch.empty(info.shape, dtype=info.dtype)
            return
        start = info.offset - info.offset % mmap.ALLOCATIONGRANULARITY
        with open(info.file, "rb") as f:
            # MAP_POPULATE maps every page up front: one call instead of a page fault per 4 KiB.
            mm = mmap.mmap(f.fileno(), info.offset + info.nbytes - start, offset=start,
                           flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0), prot=mmap.PROT_READ)
        view = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # read-only buffer: callers copy out of it
                view = torch.frombuffer(mm, dtype=info.dtype, count=numel, offset=info.offset - start)
            yield view.reshape(info.shape)
        finally:
            del view
            try:
                mm.close()
            except BufferError:  # a caller kept a view: the mapping goes with its last reference
                pass

    def get(self, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Read one tensor into memory of its own, converted to `dtype` if given."""
        with self.mapped(name) as view:
            # One pass from the page cache into the compute dtype (or a plain copy).
            return view.to(dtype) if dtype is not None and dtype != view.dtype else view.clone()

    def header_hash(self) -> str:
        """A cheap content fingerprint: hash of every tensor's name, dtype, shape and file size."""
        h = hashlib.sha256()
        for name in sorted(self._infos):
            i = self._infos[name]
            h.update(f"{name}|{i.dtype}|{i.shape}|{i.file.name}|{i.file.stat().st_size}\n".encode())
        return h.hexdigest()[:16]

    def close(self) -> None:
        self._pickled = None

    def __enter__(self) -> CheckpointReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

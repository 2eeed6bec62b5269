"""Run a merge: plan (validate everything), then stream tensor by tensor into planned shards.

    cfg = load_merge_config("merge.yml")
    result = run_merge(cfg, "out/merged", config_path="merge.yml")

Peak memory is about (number of models + 2) × the largest tensor in the compute dtype: inputs are
read one tensor at a time from memory-mapped files and each result is written at its planned
offset as soon as it exists. Elementwise methods (linear, task arithmetic) go further on the CPU:
parallel merge lanes read, merge and narrow each tensor in tasks of blocks straight into the
writer's staging ring, so their working memory is a few tasks and their passes run in cache (see
the pipeline comment in `run_merge`).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import yaml
from pydantic import ValidationError

from fusion.common.errors import FusevalError
from fusion.common.files import atomic_output_dir, atomic_write_text
from fusion.common.hashing import derived_seed
from fusion.io import (
    DEFAULT_SHARD_BYTES,
    CheckpointReader,
    Reservation,
    ShardedWriter,
    copy_model_files,
    dtype_name,
    parse_dtype,
)
from fusion.merge.config import MergeConfig
from fusion.merge.params import layer_index, layer_position, resolve
from fusion.merge.registry import MergeMethod, Params, TensorContext, get_method
from fusion.threads import lanes, one_core

RECIPE_NAME = "fuseval_recipe.yml"
WEIGHTS_NAME = "fuseval_merge_weights.json"
# Methods whose mergekit kernels upcast to float32 whatever `dtype` says.
FLOAT32_METHODS = {"linear", "slerp"}
# Elementwise methods stream a tensor in tasks of TASK_NUMEL elements, each merged by one merge
# lane in blocks of BLOCK_NUMEL (4 MiB in float32: the method's passes over a block stay in the
# CPU's last-level cache); TASKS_AHEAD tasks per lane are queued, so no lane waits for the main
# thread. Measured on the 1B benchmark set (2 cores): 2^19..2^20-element blocks in 2^21..2^22
# tasks were best and about equal; 2^17-element blocks were ~50% slower (per-block overhead).
BLOCK_NUMEL = 1 << 20
TASK_NUMEL = 1 << 22
TASKS_AHEAD = 2


@dataclass(frozen=True)
class MergeOptions:
    """Run-time choices that are not part of the recipe's math."""

    out_dtype: str | None = None
    shard_bytes: int = DEFAULT_SHARD_BYTES
    allow_pickle: bool = False
    device: str = "cpu"
    force: bool = False
    direct_writes: bool = True  # O_DIRECT where the file system takes it (fusion.io._Stream)


@dataclass
class MergeResult:
    """What a merge wrote."""

    out_dir: Path
    files: list[Path]
    n_tensors: int
    total_bytes: int
    seconds: float
    diagnostics: dict[str, dict] = field(default_factory=dict)


@dataclass(frozen=True)
class _Input:
    label: str  # as written in the config
    reader: CheckpointReader
    raw_params: dict


@dataclass(frozen=True)
class _TensorPlan:
    name: str
    shape: tuple[int, ...]
    out_dtype: torch.dtype
    merge: bool  # False: a non-float buffer copied from the reference model
    model_params: tuple[Params, ...] = ()
    params: Params | None = None


def _resolve_model_path(ref: str, config_path: Path | None) -> Path:
    p = Path(ref).expanduser()
    if p.is_dir() or p.is_absolute() or config_path is None:
        return p
    beside = config_path.parent / p
    return beside if beside.is_dir() else p


def _num_layers(reader: CheckpointReader) -> int:
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if isinstance(reader.config.get(key), int):
            return reader.config[key]
    idx = [i for i in (layer_index(n) for n in reader.names) if i is not None]
    return max(idx) + 1 if idx else 1


def _architecture(reader: CheckpointReader) -> str:
    archs = reader.config.get("architectures") or []
    return ",".join(archs) or reader.config.get("model_type") or "unknown"


def _check_compatible(ref: _Input, others: list[_Input]) -> None:
    arch = _architecture(ref.reader)
    ref_names = ref.reader.names
    for o in others:
        if _architecture(o.reader) != arch:
            raise FusevalError(f"{o.reader.path}: architecture {_architecture(o.reader)} differs from {ref.reader.path} ({arch})")
        names = set(o.reader.names)
        for n in ref_names:
            if n not in names:
                raise FusevalError(f"{o.reader.path}: tensor {n!r} is missing (present in {ref.reader.path})")
            if o.reader.info(n).shape != ref.reader.info(n).shape:
                raise FusevalError(f"{o.reader.path}: tensor {n!r} has shape {o.reader.info(n).shape}, {ref.reader.path} has {ref.reader.info(n).shape}")
            # Float dtypes may differ (all are computed in one dtype); a float against an integer tensor may not:
            # the integer one would be silently converted, or copied unmerged when it is the reference's.
            mine, theirs = o.reader.info(n).dtype, ref.reader.info(n).dtype
            if mine.is_floating_point != theirs.is_floating_point:
                raise FusevalError(f"{o.reader.path}: tensor {n!r} has dtype {dtype_name(mine)}, {ref.reader.path} has "
                                   f"{dtype_name(theirs)}")
        extra = names - set(ref_names)
        if extra:
            raise FusevalError(f"{o.reader.path}: tensor {sorted(extra)[0]!r} is not in {ref.reader.path}")


def _params_for(method: MergeMethod, cfg: MergeConfig, inputs: list[_Input], name: str, t: float,
                source: str) -> tuple[tuple[Params, ...], Params]:
    g = resolve(cfg.parameters, name, t)
    model_keys = method.model_params.model_fields
    try:
        params = method.global_params(**{k: v for k, v in g.items() if k not in model_keys})
    except ValidationError as e:
        raise FusevalError(f"{source}: parameters for tensor {name!r}: {_first_error(e)}") from None
    defaults = {k: v for k, v in g.items() if k in model_keys}
    mps = []
    for inp in inputs:
        try:
            mps.append(method.model_params(**{**defaults, **resolve(inp.raw_params, name, t)}))
        except ValidationError as e:
            raise FusevalError(f"{source}: model {inp.label}, tensor {name!r}: {_first_error(e)}") from None
    return tuple(mps), params


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    if err["type"] == "missing":
        return f"missing parameter '{loc}'"
    return f"{loc + ': ' if loc else ''}{err['msg'].removeprefix('Value error, ')}"


def _all_finite(t: torch.Tensor) -> bool:
    # A NaN or Inf anywhere makes the sum non-finite; only then (or on overflow) look element-wise.
    return not t.is_floating_point() or bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def _check_finite(t: torch.Tensor, what: str) -> None:
    if not _all_finite(t):
        raise FusevalError(f"{what} contains NaN or Inf")


def run_merge(cfg: MergeConfig, out_dir: str | Path, *, config_path: str | Path | None = None,
              options: MergeOptions = MergeOptions(),
              progress: Callable[[str, int, int], None] | None = None) -> MergeResult:
    """Merge the models of `cfg` into `out_dir` (atomically); `progress(name, done, total)` per tensor."""
    start = time.perf_counter()
    source = str(config_path) if config_path else "<config>"
    config_path = Path(config_path) if config_path else None
    method = get_method(cfg.merge_method)
    out_dir = Path(out_dir)

    def open_input(ref: str, raw: dict) -> _Input:
        return _Input(ref, CheckpointReader(_resolve_model_path(ref, config_path), options.allow_pickle), raw)

    entries = [(m.model, m.parameters) for m in cfg.models]
    base = None
    if method.base == "required":
        base = open_input(cfg.base_model, {})
        entries = [e for e in entries if e[0] != cfg.base_model]
    elif cfg.base_model and cfg.base_model not in [e[0] for e in entries]:
        entries.append((cfg.base_model, {}))  # mergekit: an unlisted base is one more input
    inputs = [open_input(ref, raw) for ref, raw in entries]
    ref = base or inputs[0]
    for inp in ([base] if base else []) + inputs:
        if inp.reader.path.resolve() == out_dir.resolve():
            raise FusevalError(f"{out_dir}: output directory is one of the input models")
    _check_compatible(ref, [i for i in inputs if i is not ref])

    compute = parse_dtype(cfg.dtype) if cfg.dtype else torch.float32
    if method.name in FLOAT32_METHODS and compute != torch.float64:
        compute = torch.float32
    forced_out = options.out_dtype or cfg.out_dtype or cfg.dtype
    num_layers = _num_layers(ref.reader)

    plan: list[_TensorPlan] = []
    for name in ref.reader.names:
        info = ref.reader.info(name)
        if not info.dtype.is_floating_point:
            plan.append(_TensorPlan(name, info.shape, info.dtype, merge=False))
            continue
        mps, params = _params_for(method, cfg, inputs, name, layer_position(name, num_layers), source)
        out_dtype = parse_dtype(forced_out) if forced_out else info.dtype
        plan.append(_TensorPlan(name, info.shape, out_dtype, True, mps, params))

    side_src = ref.reader.path
    if cfg.tokenizer_source not in (None, "base"):
        if cfg.tokenizer_source == "union":
            raise FusevalError(f"{source}: tokenizer_source 'union' is not supported; use 'base' or a model path")
        side_src = _resolve_model_path(cfg.tokenizer_source, config_path)
        if not side_src.is_dir():
            raise FusevalError(f"{source}: tokenizer_source {cfg.tokenizer_source}: directory not found")

    diagnostics: dict[str, dict] = {}
    device = torch.device(options.device)

    def load(inp: _Input, name: str) -> torch.Tensor:
        t = inp.reader.get(name, dtype=compute)
        _check_finite(t, f"{inp.reader.path}: tensor {name!r}")
        return t.to(device)

    def overflow(p: _TensorPlan) -> FusevalError:
        # The result is finite in the compute dtype; a narrower written dtype can still overflow to Inf.
        return FusevalError(f"{source}: merge result for tensor {p.name!r} exceeds the range of "
                            f"{dtype_name(p.out_dtype)} (largest {torch.finfo(p.out_dtype).max:g}); "
                            "write a wider dtype (--dtype / out_dtype)")

    def write(p: _TensorPlan, out: torch.Tensor) -> None:
        # A whole tensor, narrowed to its written dtype here, in the writer thread.
        t = out.to(p.out_dtype)
        if t.dtype != out.dtype and not _all_finite(t):
            raise overflow(p)
        writer.write(p.name, t)

    def load_inputs(p: _TensorPlan):
        if not p.merge:
            return None, None
        if blockwise:  # map the inputs (MAP_POPULATE takes a while); the merge lanes read them
            maps = ExitStack()
            try:
                return maps, [maps.enter_context(inp.reader.mapped(p.name)) for inp in srcs]
            except BaseException:
                maps.close()
                raise
        return (load(base, p.name) if base else None), [load(inp, p.name) for inp in inputs]

    def merged(p: _TensorPlan, b: torch.Tensor | None, models: list[torch.Tensor], check: bool = True) -> torch.Tensor:
        rng = None if method.elementwise else np.random.Generator(np.random.PCG64(derived_seed(cfg.seed, p.name)))
        ctx = TensorContext(p.name, rng)
        out = method.fn(b, models, list(p.model_params), p.params, ctx)
        if check and not _all_finite(out):
            not_finite(p, [])
        if ctx.notes:
            diagnostics[p.name] = ctx.notes
        return out

    def not_finite(p: _TensorPlan, unchecked: list[torch.Tensor]) -> None:
        # `unchecked`: the inputs, when they were not checked for NaN/Inf before the merge.
        for inp, t in zip(srcs, unchecked):  # a bad input is the better message
            _check_finite(t, f"{inp.reader.path}: tensor {p.name!r}")
        raise FusevalError(f"{source}: merge result ({method.name}) for tensor {p.name!r} contains NaN or Inf")

    srcs = ([base] if base else []) + inputs
    blockwise = method.elementwise and device.type == "cpu"
    n_lanes = lanes() if blockwise else 1
    lane_local = threading.local()  # each lane's block buffers, one per input, in the compute dtype

    def merge_task(p: _TensorPlan, parts: list[torch.Tensor], out: torch.Tensor) -> None:
        # Runs in a merge lane: merges the task's inputs (`parts`, views of the mapped files) into
        # `out` (room the writer reserved, in the written dtype), BLOCK_NUMEL elements at a time:
        # each block is read into the lane's buffers, merged there and narrowed into `out`.
        # Elementwise arithmetic carries a NaN or Inf of any input into the output, and narrowing
        # keeps them: one look at `out` covers inputs, result and range; only then are the blocks
        # looked at again, to name the input or the cause.
        if not hasattr(lane_local, "inputs"):
            lane_local.inputs = [torch.empty(BLOCK_NUMEL, dtype=compute) for _ in srcs]
        for at in range(0, out.numel(), BLOCK_NUMEL):
            out[at:at + BLOCK_NUMEL].copy_(merged_block(p, [v[at:at + BLOCK_NUMEL] for v in parts]))
        if not _all_finite(out):
            for at in range(0, out.numel(), BLOCK_NUMEL):
                block = [v[at:at + BLOCK_NUMEL] for v in parts]
                if not _all_finite(merged_block(p, block)):
                    not_finite(p, block)
            raise overflow(p)

    def merged_block(p: _TensorPlan, parts: list[torch.Tensor]) -> torch.Tensor:
        loaded = [buf[:v.numel()].copy_(v) for buf, v in zip(lane_local.inputs, parts)]
        return merged(p, loaded[0] if base else None, loaded[1:] if base else loaded, check=False)

    # A pipeline: one thread reads (maps, or converts and checks) tensor i+1 and one writes tensor
    # i-1 while tensor i is merged, so reading, computing and writing overlap instead of adding up.
    # torch, the mmap'd reads and file writes release the GIL. Whole tensors are written in plan
    # order by the one writer thread, each after the one before (memory grows by one tensor's
    # inputs and one output).
    # Elementwise methods on the CPU go further. The reader thread only maps a tensor's inputs. The
    # main thread cuts the tensor into tasks of TASK_NUMEL elements and reserves each task's room
    # in the writer's staging ring (in file order); `n_lanes` merge lanes, threads whose torch
    # operations run on one core each (fusion.threads), merge tasks straight from the page cache
    # into that room, and the main thread commits finished tasks in order, so the writer sends
    # them to disk without copying them. One torch thread team spanning the cores (every operation
    # split, then a barrier) was ~30% slower: the reader and writer threads kept taking a member's core.
    queue: deque[tuple[Reservation, Future, ExitStack | None]] = deque()  # tasks merging, in file order
    written: Future | None = None  # the last whole-tensor write

    def hand_off(keep: int) -> None:
        # Commit finished tasks, oldest first, until `keep` are left merging.
        while len(queue) > keep:
            r, fut, maps = queue.popleft()
            fut.result()
            if maps is not None:  # the tensor's last task: its inputs are read; unmapping takes a while
                reader.submit(maps.close)
            writer.commit(r)

    def merge_tasks(p: _TensorPlan, maps: ExitStack, views: list[torch.Tensor]) -> None:
        if written is not None:
            written.result()  # the writer thread is done with the writer
        flat = [v.reshape(-1) for v in views]
        n, at = flat[0].numel(), 0
        while True:  # an empty tensor is one empty task
            r = writer.reserve(p.name, at, min(TASK_NUMEL, n - at))
            k = r.out.numel()
            fut = lanes_pool.submit(merge_task, p, [v[at:at + k] for v in flat], r.out)
            at += k
            queue.append((r, fut, maps if at >= n else None))
            hand_off(TASKS_AHEAD * n_lanes)
            if at >= n:
                break

    # Tasks reserved and not yet committed: those merging, and the one being reserved.
    out_itemsize = max((p.out_dtype.itemsize for p in plan), default=4)
    open_bytes = (TASKS_AHEAD * n_lanes + 1) * TASK_NUMEL * out_itemsize if blockwise else 0
    with (atomic_output_dir(out_dir, force=options.force) as tmp, ThreadPoolExecutor(1, "fuseval-read") as reader,
          ShardedWriter(tmp, [(p.name, p.shape, p.out_dtype) for p in plan], options.shard_bytes,
                        metadata={"fuseval_method": method.name}, direct=options.direct_writes,
                        open_bytes=open_bytes) as writer,
          ThreadPoolExecutor(1, "fuseval-write") as write_pool,
          ThreadPoolExecutor(n_lanes, "fuseval-merge", initializer=one_core) as lanes_pool):
        ahead = reader.submit(load_inputs, plan[0]) if plan else None
        for i, p in enumerate(plan):
            loaded = ahead.result()
            ahead = reader.submit(load_inputs, plan[i + 1]) if i + 1 < len(plan) else None
            if blockwise and p.merge:
                merge_tasks(p, *loaded)
            else:  # the whole tensor; its inputs are dropped before waiting for the previous write
                hand_off(0)
                out = merged(p, *loaded) if p.merge else ref.reader.get(p.name)
                del loaded
                if written is not None:
                    written.result()
                written = write_pool.submit(write, p, out)
                del out
            loaded = None
            if progress:
                progress(p.name, i + 1, len(plan))
        hand_off(0)
        if written is not None:
            written.result()
        files = writer.finish()
        copy_model_files(side_src, tmp, out_dtype=parse_dtype(forced_out) if forced_out else None)
        if diagnostics:
            atomic_write_text(tmp / WEIGHTS_NAME, json.dumps(diagnostics, indent=1) + "\n")
        recipe = _recipe(cfg, method, plan, base, inputs, compute, options, side_src)
        atomic_write_text(tmp / RECIPE_NAME, yaml.safe_dump(recipe, sort_keys=False))
    return MergeResult(out_dir, [out_dir / f.name for f in files], len(plan), writer.total_bytes,
                       time.perf_counter() - start, diagnostics)


def _recipe(cfg: MergeConfig, method: MergeMethod, plan: list[_TensorPlan], base: _Input | None,
            inputs: list[_Input], compute: torch.dtype, options: MergeOptions, side_src: Path) -> dict:
    from fusion import __version__

    first = next((p for p in plan if p.merge), None)
    return {
        "fuseval_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": cfg.model_dump(mode="json", exclude_none=True),
        "resolved": {
            "merge_method": method.name,
            "compute_dtype": dtype_name(compute),
            "out_dtypes": sorted({dtype_name(p.out_dtype) for p in plan}),
            "seed": cfg.seed,
            "shard_bytes": options.shard_bytes,
            # Method defaults as they applied to the first merged tensor (e.g. DARE's rescale).
            "global_parameters": first.params.model_dump(by_alias=True) if first else {},
            "tokenizer_source": str(side_src),
        },
        "inputs": [{"model": i.label, "path": str(i.reader.path.resolve()), "header_hash": i.reader.header_hash(),
                    "role": "base" if i is base else "model"} for i in ([base] if base else []) + inputs],
    }

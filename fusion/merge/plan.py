"""Plan a merge before its first byte is written: open and check every input, resolve every tensor.

    plan = plan_merge(cfg, "out/merged", "merge.yml", allow_pickle=False, out_dtype=None)
    plan.tensors[0]   # TensorPlan: name, shape, written dtype, the method's parameters for it

Everything that can be wrong with a recipe (a missing model, a tensor missing or shaped
differently in one model, an architecture mismatch, a parameter a method rejects for some
tensor, a tokenizer source that does not exist) is found here, before any output exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import ValidationError

from fusion.common.errors import FusevalError
from fusion.io import CheckpointReader, dtype_name, parse_dtype
from fusion.merge.base import MergeMethod, Params
from fusion.merge.config import MergeConfig
from fusion.merge.params import layer_index, layer_position, resolve
from fusion.merge.registry import get_method

# Methods whose mergekit kernels upcast to float32 whatever `dtype` says.
FLOAT32_METHODS = {"linear", "slerp"}


@dataclass(frozen=True)
class MergeInput:
    """One input model: as the config names it, its reader, and its per-model parameters."""

    label: str  # as written in the config
    reader: CheckpointReader
    raw_params: dict


@dataclass(frozen=True)
class TensorPlan:
    """One output tensor: what is written, and the method's parameters evaluated for it."""

    name: str
    shape: tuple[int, ...]
    out_dtype: torch.dtype
    merge: bool  # False: a non-float buffer copied from the reference model
    model_params: tuple[Params, ...] = ()
    params: Params | None = None


@dataclass(frozen=True)
class MergePlan:
    """A checked merge: the method, the opened inputs, the dtypes and every output tensor in order."""

    cfg: MergeConfig
    method: MergeMethod
    source: str  # the config file, for messages ("<config>" without one)
    base: MergeInput | None  # θ, for methods that take a base
    inputs: list[MergeInput]  # the models merged (besides the base)
    compute: torch.dtype  # every input is converted to this before the method sees it
    forced_out: str | None  # the written dtype for every float tensor (None: each tensor's own)
    tensors: list[TensorPlan]  # in the reference model's order
    side_src: Path  # where config, tokenizer and chat template are copied from

    @property
    def ref(self) -> MergeInput:
        """The model whose tensor names, order and non-float buffers the output takes."""
        return self.base or self.inputs[0]

    @property
    def sources(self) -> list[MergeInput]:
        """Every input, the base first."""
        return ([self.base] if self.base else []) + self.inputs


def resolve_model_path(ref: str, config_path: Path | None) -> Path:
    """A model path from a config: as written, or beside the config file if that is a directory."""
    p = Path(ref).expanduser()
    if p.is_dir() or p.is_absolute() or config_path is None:
        return p
    beside = config_path.parent / p
    return beside if beside.is_dir() else p


def plan_merge(cfg: MergeConfig, out_dir: Path, config_path: str | Path | None = None, *,
               allow_pickle: bool = False, out_dtype: str | None = None) -> MergePlan:
    """Open and check the inputs of `cfg` and plan every output tensor; `out_dtype` overrides the config's."""
    source = str(config_path) if config_path else "<config>"
    config_path = Path(config_path) if config_path else None
    method = get_method(cfg.merge_method)

    def open_input(ref: str, raw: dict) -> MergeInput:
        return MergeInput(ref, CheckpointReader(resolve_model_path(ref, config_path), allow_pickle), raw)

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
    forced_out = out_dtype or cfg.out_dtype or cfg.dtype
    tensors = _plan_tensors(method, cfg, ref, inputs, forced_out, source)
    side_src = _side_source(cfg, ref, config_path, source)
    return MergePlan(cfg, method, source, base, inputs, compute, forced_out, tensors, side_src)


def _plan_tensors(method: MergeMethod, cfg: MergeConfig, ref: MergeInput, inputs: list[MergeInput],
                  forced_out: str | None, source: str) -> list[TensorPlan]:
    num_layers = _num_layers(ref.reader)
    plan: list[TensorPlan] = []
    for name in ref.reader.names:
        info = ref.reader.info(name)
        if not info.dtype.is_floating_point:
            plan.append(TensorPlan(name, info.shape, info.dtype, merge=False))
            continue
        mps, params = _params_for(method, cfg, inputs, name, layer_position(name, num_layers), source)
        out_dtype = parse_dtype(forced_out) if forced_out else info.dtype
        plan.append(TensorPlan(name, info.shape, out_dtype, True, mps, params))
    return plan


def _side_source(cfg: MergeConfig, ref: MergeInput, config_path: Path | None, source: str) -> Path:
    side_src = ref.reader.path
    if cfg.tokenizer_source not in (None, "base"):
        if cfg.tokenizer_source == "union":
            raise FusevalError(f"{source}: tokenizer_source 'union' is not supported; use 'base' or a model path")
        side_src = resolve_model_path(cfg.tokenizer_source, config_path)
        if not side_src.is_dir():
            raise FusevalError(f"{source}: tokenizer_source {cfg.tokenizer_source}: directory not found")
    return side_src


def _num_layers(reader: CheckpointReader) -> int:
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if isinstance(reader.config.get(key), int):
            return reader.config[key]
    idx = [i for i in (layer_index(n) for n in reader.names) if i is not None]
    return max(idx) + 1 if idx else 1


def _architecture(reader: CheckpointReader) -> str:
    archs = reader.config.get("architectures") or []
    return ",".join(archs) or reader.config.get("model_type") or "unknown"


def _check_compatible(ref: MergeInput, others: list[MergeInput]) -> None:
    arch = _architecture(ref.reader)
    ref_names = ref.reader.names
    for o in others:
        if _architecture(o.reader) != arch:
            raise FusevalError(f"{o.reader.path}: architecture {_architecture(o.reader)} differs from "
                               f"{ref.reader.path} ({arch})")
        names = set(o.reader.names)
        for n in ref_names:
            if n not in names:
                raise FusevalError(f"{o.reader.path}: tensor {n!r} is missing (present in {ref.reader.path})")
            if o.reader.info(n).shape != ref.reader.info(n).shape:
                raise FusevalError(f"{o.reader.path}: tensor {n!r} has shape {o.reader.info(n).shape}, "
                                   f"{ref.reader.path} has {ref.reader.info(n).shape}")
            # Float dtypes may differ (all are computed in one dtype); a float against an integer tensor may not:
            # the integer one would be silently converted, or copied unmerged when it is the reference's.
            mine, theirs = o.reader.info(n).dtype, ref.reader.info(n).dtype
            if mine.is_floating_point != theirs.is_floating_point:
                raise FusevalError(f"{o.reader.path}: tensor {n!r} has dtype {dtype_name(mine)}, {ref.reader.path} has "
                                   f"{dtype_name(theirs)}")
        extra = names - set(ref_names)
        if extra:
            raise FusevalError(f"{o.reader.path}: tensor {sorted(extra)[0]!r} is not in {ref.reader.path}")


def _params_for(method: MergeMethod, cfg: MergeConfig, inputs: list[MergeInput], name: str, t: float,
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

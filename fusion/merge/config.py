"""The merge config: mergekit-style YAML, validated once; unknown keys are errors that name the key."""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fusion.common.configfile import read_yaml, validate_config
from fusion.common.errors import FusevalError
from fusion.merge.params import check_value
from fusion.merge.registry import get_method


class ModelEntry(BaseModel):
    """One input model of a merge."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(description="Path of a Hugging Face model directory (safetensors).")
    parameters: dict[str, Any] = Field(default_factory=dict, description="Per-model parameters (weight, density, ...).")


class MergeConfig(BaseModel):
    """A merge recipe, compatible with mergekit's YAML for the shared subset."""

    model_config = ConfigDict(extra="forbid")
    merge_method: str = Field(description="Registered method name (linear, ties, dare_ties, slerp, sce, varm, ...).")
    base_model: str | None = Field(default=None, description="θ: the common ancestor the deltas are taken against.")
    models: list[ModelEntry] = Field(description="The models to merge, with per-model parameters.")
    parameters: dict[str, Any] = Field(default_factory=dict, description="Global parameters and per-model defaults.")
    dtype: str | None = Field(default=None, description="Compute dtype (mergekit's meaning); default float32.")
    out_dtype: str | None = Field(default=None, description="Written dtype; default `dtype`, else the base's.")
    tokenizer_source: str | None = Field(default=None,
                                         description="'base' or a model path to copy tokenizer/config from.")
    seed: int = Field(default=0, description="Seed for random methods (DARE, DELLA); recorded in the recipe.")


def _keys(model: type[BaseModel]) -> set[str]:
    """The names a YAML uses for a parameter model's fields (aliases such as `lambda` included)."""
    return {f.alias or name for name, f in model.model_fields.items()}


def load_merge_config(path: str | os.PathLike) -> MergeConfig:
    """Read and validate a merge YAML; every problem is one line naming the file and key."""
    return parse_merge_config(read_yaml(path), str(path))


def parse_merge_config(data: Any, source: str = "<config>") -> MergeConfig:
    """Validate a merge config given as a dict (see `load_merge_config`)."""
    if isinstance(data, dict) and "slices" in data:
        raise FusevalError(f"{source}: 'slices' is not supported yet; list whole models under 'models'")
    cfg = validate_config(MergeConfig, data, source)
    try:
        method = get_method(cfg.merge_method)
    except FusevalError as e:
        raise FusevalError(f"{source}: {e}") from None
    model_keys = _keys(method.model_params)
    global_keys = _keys(method.global_params)
    for i, entry in enumerate(cfg.models):
        for key, value in entry.parameters.items():
            if key not in model_keys:
                allowed = ", ".join(sorted(model_keys)) or "none"
                raise FusevalError(f"{source}: unknown parameter 'models[{i}].parameters.{key}' for "
                                   f"{cfg.merge_method} (per-model parameters: {allowed})")
            check_value(value, f"{source}: models[{i}].parameters.{key}")
    for key, value in cfg.parameters.items():
        if key not in model_keys | global_keys:
            allowed = ", ".join(sorted(model_keys | global_keys)) or "none"
            raise FusevalError(f"{source}: unknown parameter 'parameters.{key}' for {cfg.merge_method} "
                               f"(allowed: {allowed})")
        check_value(value, f"{source}: parameters.{key}")
    if method.base == "required" and not cfg.base_model:
        raise FusevalError(f"{source}: merge_method {cfg.merge_method} needs 'base_model'")
    n = len([m for m in cfg.models if m.model != cfg.base_model]) if method.base == "required" else len(cfg.models)
    if n < method.min_models or (method.max_models is not None and n > method.max_models):
        if method.max_models:
            upper = f" to {method.max_models}" if method.max_models != method.min_models else ""
            want = f"{method.min_models}{upper}"
        else:
            want = f"at least {method.min_models}"
        raise FusevalError(f"{source}: {cfg.merge_method} takes {want} model(s) besides the base, got {n}")
    return cfg

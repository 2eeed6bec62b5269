"""What a merge method is: a pure function on tensors plus pydantic parameter models, registered by name.

    @register("linear", model_params=WeightParams, global_params=LinearParams, elementwise=True)
    def linear(base, models, model_params, params, ctx): ...

A method function has the signature (`MergeFn`)

    fn(base: Tensor | None, models: list[Tensor], model_params: list[P], params: G,
       ctx: TensorContext) -> Tensor

where every tensor is already in the compute dtype, `P` is the method's per-model parameter
model and `G` its global one, both evaluated for this tensor (layer gradients and filters applied),
and `ctx` carries the tensor's seeded generator and a place to note diagnostics (e.g. weights).

The input tensors belong to the method: it may overwrite them in place (the engine never uses them
again). Forming deltas and masking them in place keeps a merge's peak memory near (n + 3)
tensors instead of twice that. The result must not alias `base` in a way that matters to the
caller: the engine writes it and drops everything.

This module holds the types and the `METHODS` table that `register` fills; it imports no method.
`fusion.merge.registry` imports every method module, so the table is complete once it is loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict


class Params(BaseModel):
    """Base for method parameter models: frozen, and unknown names are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoParams(Params):
    """A method without parameters of this kind."""


@dataclass
class TensorContext:
    """What a method may use besides tensors: its generator, and a notebook for diagnostics."""

    name: str
    # numpy's PCG64 draws uniforms ~2x faster than torch's CPU generator, and masks drawn on the
    # host are the same whichever device computes the merge. None for elementwise methods: their
    # result at an entry depends on the inputs' entries there and nothing else (they run in blocks).
    rng: np.random.Generator | None
    notes: dict[str, Any] = field(default_factory=dict)

    def note(self, **values: Any) -> None:
        """Record diagnostics for this tensor (e.g. per-model weights), kept in the output."""
        self.notes.update(values)


class MergeFn(Protocol):
    """The signature of a merge method function (see the module docstring)."""

    # Parameters typed Any: each method takes its own Params subclasses (P and G above).
    def __call__(self, base: torch.Tensor | None, models: list[torch.Tensor], model_params: list[Any],
                 params: Any, ctx: TensorContext) -> torch.Tensor: ...


@dataclass(frozen=True)
class MergeMethod:
    """A registered merge method."""

    name: str
    fn: MergeFn
    model_params: type[Params]
    global_params: type[Params]
    # "required": the base is θ and is removed from the models list if listed there too;
    # "optional": the base is merged only if it is listed in `models` (linear).
    base: Literal["required", "optional"]
    min_models: int = 1
    max_models: int | None = None
    description: str = ""
    # Each output entry depends only on the inputs' entries at the same place, and a NaN or Inf in
    # any of them makes it NaN or Inf (plain +, −, ×, ÷ do). The engine may then call fn on
    # cache-sized blocks of the flattened tensors instead of whole tensors (same result), and look
    # for NaN/Inf in the inputs only when the output has some.
    elementwise: bool = False


# Filled by `register` as the method modules are imported (fusion.merge.registry imports them all).
METHODS: dict[str, MergeMethod] = {}


def register(name: str, *, model_params: type[Params] = NoParams, global_params: type[Params] = NoParams,
             base: Literal["required", "optional"] = "required", min_models: int = 1,
             max_models: int | None = None, elementwise: bool = False) -> Callable[[MergeFn], MergeFn]:
    """Decorator registering a merge function under `name`."""

    def deco(fn: MergeFn) -> MergeFn:
        doc = (fn.__doc__ or "").strip().splitlines()
        METHODS[name] = MergeMethod(name, fn, model_params, global_params, base, min_models, max_models,
                                    doc[0] if doc else "", elementwise)
        return fn

    return deco


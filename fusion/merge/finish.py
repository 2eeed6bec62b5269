"""What a merge writes besides its tensors: the model's side files, the methods' notes and the recipe.

    finish_output(plan, tmp_dir, diagnostics, shard_bytes)

`fuseval_recipe.yml` records the config, what it resolved to (dtypes, seed, parameter defaults,
tokenizer source) and a fingerprint of every input; `fuseval_merge_weights.json` holds what the
method noted per tensor (e.g. VaRM's weights), when it noted anything.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import yaml

from fusion.common.files import atomic_write_text
from fusion.io import copy_model_files, dtype_name, parse_dtype
from fusion.merge.plan import MergePlan

RECIPE_NAME = "fuseval_recipe.yml"
WEIGHTS_NAME = "fuseval_merge_weights.json"


def finish_output(plan: MergePlan, out_dir: Path, diagnostics: dict[str, dict], shard_bytes: int) -> None:
    """Copy config and tokenizer files next to the shards and write the weights notes and the recipe."""
    copy_model_files(plan.side_src, out_dir, out_dtype=parse_dtype(plan.forced_out) if plan.forced_out else None)
    if diagnostics:
        atomic_write_text(out_dir / WEIGHTS_NAME, json.dumps(diagnostics, indent=1) + "\n")
    atomic_write_text(out_dir / RECIPE_NAME, yaml.safe_dump(recipe(plan, shard_bytes), sort_keys=False))


def recipe(plan: MergePlan, shard_bytes: int) -> dict:
    """The recipe a merge records: its config, what that resolved to, and the inputs' fingerprints."""
    from fusion import __version__

    first = next((p for p in plan.tensors if p.merge), None)
    return {
        "fuseval_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": plan.cfg.model_dump(mode="json", exclude_none=True),
        "resolved": {
            "merge_method": plan.method.name,
            "compute_dtype": dtype_name(plan.compute),
            "out_dtypes": sorted({dtype_name(p.out_dtype) for p in plan.tensors}),
            "seed": plan.cfg.seed,
            "shard_bytes": shard_bytes,
            # Method defaults as they applied to the first merged tensor (e.g. DARE's rescale).
            "global_parameters": first.params.model_dump(by_alias=True) if first else {},
            "tokenizer_source": str(plan.side_src),
        },
        "inputs": [{"model": i.label, "path": str(i.reader.path.resolve()), "header_hash": i.reader.header_hash(),
                    "role": "base" if i is plan.base else "model"} for i in plan.sources],
    }

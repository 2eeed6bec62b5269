"""`fuseval demo`: the embedded end-to-end job on tiny local models (for now: the merge core).

Builds a tiny base model and two fine-tuned-like variants, merges them with every registered
method through the same recipe path a user's YAML takes, loads each result with transformers
and generates from it, and prints what each method did to the deltas.
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from rich.console import Console
from rich.table import Table

from fusion.files import atomic_write_text
from fusion.io import CheckpointReader
from fusion.merge import MergeOptions, load_merge_config, run_merge
from fusion.zoo import merge_set

DEMO_RECIPES: dict[str, dict] = {
    "linear": {"models": [("variant1", {"weight": 0.5}), ("variant2", {"weight": 0.5})], "base_in_models": False},
    "task_arithmetic": {"models": [("variant1", {"weight": 0.5}), ("variant2", {"weight": 0.5})]},
    "ties": {"models": [("variant1", {"weight": 1.0, "density": 0.5}), ("variant2", {"weight": 1.0, "density": 0.5})]},
    "dare_ties": {"models": [("variant1", {"weight": 1.0, "density": 0.5}), ("variant2", {"weight": 1.0, "density": 0.5})]},
    "breadcrumbs_ties": {"models": [("variant1", {"weight": 1.0, "density": 0.5}), ("variant2", {"weight": 1.0, "density": 0.5})]},
    "della": {"models": [("variant1", {"weight": 1.0, "density": 0.5}), ("variant2", {"weight": 1.0, "density": 0.5})]},
    "slerp": {"models": [("variant1", {})], "parameters": {"t": [0.0, 0.5, 1.0]}},
    "model_stock": {"models": [("variant1", {}), ("variant2", {})]},
    "sce": {"models": [("variant1", {}), ("variant2", {})], "parameters": {"select_topk": 0.5}},
    "varm": {"models": [("variant1", {}), ("variant2", {})]},
}


def _recipe(method: str, spec: dict, paths: dict[str, Path]) -> dict:
    cfg = {"merge_method": method, "models": [{"model": str(paths[m]), "parameters": p} for m, p in spec["models"]]}
    if spec.get("base_in_models", True):
        cfg["base_model"] = str(paths["base"])
    if "parameters" in spec:
        cfg["parameters"] = spec["parameters"]
    return cfg


def _delta_rms(model: Path, base: CheckpointReader) -> float:
    """Root-mean-square distance of a model's weights from the base, over all tensors."""
    r = CheckpointReader(model)
    total, count = 0.0, 0
    for name in base.names:
        d = r.get(name).double() - base.get(name).double()
        total += float((d**2).sum())
        count += d.numel()
    return (total / count) ** 0.5


def run_demo(workspace: Path, console: Console) -> None:
    workspace = Path(workspace)
    console.print(f"[bold]fuseval demo[/bold] in {workspace} (tiny local models, CPU)")
    paths = merge_set(workspace / "zoo", size="tiny", n_variants=2, seed=0)
    base = CheckpointReader(paths["base"])
    table = Table(title="Merges of two tiny fine-tuned-like variants")
    table.add_column("method")
    table.add_column("seconds", justify="right")
    table.add_column("RMS Δ from base", justify="right")
    table.add_column("loads + generates")
    for name in ("variant1", "variant2"):
        table.add_row(f"({name}, input)", "", f"{_delta_rms(paths[name], base):.5f}", "")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    for method, spec in DEMO_RECIPES.items():
        cfg_path = workspace / "recipes" / f"{method}.yml"
        atomic_write_text(cfg_path, yaml.safe_dump(_recipe(method, spec, paths), sort_keys=False))
        out = workspace / "merged" / method
        result = run_merge(load_merge_config(cfg_path), out, config_path=cfg_path, options=MergeOptions(force=True))
        model = AutoModelForCausalLM.from_pretrained(out)
        tok = AutoTokenizer.from_pretrained(out)
        ids = tok.apply_chat_template([{"role": "user", "content": "What is 12 plus 30?"}], add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)["input_ids"]
        with torch.no_grad():
            gen = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
        table.add_row(method, f"{result.seconds:.2f}", f"{_delta_rms(out, base):.5f}",
                      f"yes, {gen.shape[1] - ids.shape[1]} tokens")
    console.print(table)
    console.print(f"Merged models: {workspace / 'merged'}/<method>, each with its fuseval_recipe.yml; "
                  f"the YAML recipes: {workspace / 'recipes'}.")
    console.print("The models are random and untrained, so there is nothing to score yet; benchmark scores "
                  "(with intervals) arrive with the runner.")

"""The suite's models as checkpoints: existing ones checked and hashed, merge and fuse recipes built where missing.

    built = build_models(ls, store, workspace=Path("runs/demo"), backend="transformers", say=print)

Built models are keyed by the content of their recipe and inputs (`workspace/models/`,
`workspace/fused/`): a rebuilt recipe is reused, a changed one is built anew beside it. Every
model is registered in the store under its content hash; `harness/run/runner.py` then serves them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fusion.common.errors import FusevalError
from fusion.common.hashing import digest
from harness.run.resolve import endpoint_hash
from harness.run.suite import LoadedSuite, ModelSpec
from harness.run.suite import expand_path as expand
from harness.store import Store

Say = Callable[[str], None]


@dataclass
class Built:
    """A model of the run, ready to serve."""

    name: str
    path: str                 # checkpoint directory (or the served name, on an openai backend)
    hash: str
    role: str                 # baseline | candidate
    group: str                # the candidate it came from (seeds of one fuse candidate share it)
    seed: int | None = None
    kind: str = "model"       # model | merge | fuse
    recipe: str | None = None


def _deep_update(base: dict, upd: dict) -> dict:
    out = dict(base)
    for k, v in upd.items():
        out[k] = _deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _merge(store: Store, m: ModelSpec, where: str, suite_path: Path, workspace: Path, say: Say) -> Path:
    from fusion.merge import load_merge_config, resolve_model_path, run_merge
    from fusion.merge.config import parse_merge_config

    if isinstance(m.merge, str):
        cfg, cfg_path = load_merge_config(m.merge), Path(m.merge)
    else:
        data = dict(m.merge)
        data["models"] = [{**e, "model": expand(e["model"], where)} if isinstance(e, dict) and "model" in e else e
                          for e in data.get("models", [])]
        if isinstance(data.get("base_model"), str):
            data["base_model"] = expand(data["base_model"], where)
        cfg, cfg_path = parse_merge_config(data, f"{where}.merge"), suite_path
    refs = [e.model for e in cfg.models] + ([cfg.base_model] if cfg.base_model else [])
    if cfg.tokenizer_source not in (None, "base"):
        refs.append(cfg.tokenizer_source)
    hashes = {}
    for ref in refs:
        p = resolve_model_path(ref, cfg_path)
        if not p.is_dir():
            raise FusevalError(f"{where}: merge input {ref!r}: no such model directory ({p})")
        hashes[ref] = store.model_hash(p)
    # The key is the recipe with every model named by its contents: moving or renaming an input rebuilds nothing.
    recipe = cfg.model_dump(mode="json")
    recipe["models"] = [{**e, "model": hashes[e["model"]]} for e in recipe["models"]]
    for field in ("base_model", "tokenizer_source"):
        recipe[field] = hashes.get(recipe[field], recipe[field])
    key = digest("merge", recipe)[:12]
    out = workspace / "models" / f"{m.name}-{key}"
    if not (out / "fuseval_recipe.yml").exists():
        say(f"merge {m.name} ({cfg.merge_method}) -> {out}")
        run_merge(cfg, out, config_path=cfg_path)
    return out


def _fuse_config(m: ModelSpec, where: str, suite_path: Path, seeds: list[int] | None):
    from pydantic import ValidationError

    from fusion.common.configfile import validation_message
    from fusion.pipeline import FuseConfig, load_fuse_config

    if isinstance(m.fuse, str):
        cfg = load_fuse_config(m.fuse)
    else:
        here = suite_path.resolve().parent
        data = dict(m.fuse)
        for key in ("pivot", "data"):
            if isinstance(data.get(key), str):
                data[key] = str(here / expand(data[key], where))
        data["sources"] = [str(here / expand(s, where)) for s in data.get("sources", []) if isinstance(s, str)]
        try:
            cfg = FuseConfig.model_validate(data)
        except ValidationError as e:
            raise FusevalError(validation_message(f"{where}.fuse", e)) from None
    upd = dict(m.fuse_overrides)
    if seeds:
        upd["seeds"] = seeds
    if upd:
        try:
            cfg = FuseConfig.model_validate(_deep_update(cfg.model_dump(), upd))
        except ValidationError as e:
            raise FusevalError(validation_message(f"{where}.fuse_overrides", e)) from None
    return cfg


def _target_params(method: str, targets: list[Path]) -> dict[str, float]:
    """Equal weights 1/n for the stage-2 merge of n targets when the method weighs its models."""
    from fusion.merge.registry import get_method

    try:
        fields = get_method(method).model_params.model_fields
    except FusevalError:
        return {}  # an unknown method is reported by the config parser with its key
    return {"weight": 1 / len(targets)} if "weight" in fields else {}


def _fuse(store: Store, m: ModelSpec, where: str, ls: LoadedSuite, workspace: Path, say: Say,
          done: dict[str, Path]) -> list[tuple[int | None, Path, str | None]]:
    """(seed, model directory, recipe) for each seed of a fuse candidate."""
    from fusion.merge.config import parse_merge_config
    from fusion.merge.engine import run_merge
    from fusion.pipeline import fuse_outputs, fused_output, run_fuse

    cfg = _fuse_config(m, where, ls.path, ls.suite.seeds)
    if m.fuse_merge and cfg.stage1 == "joint":
        raise FusevalError(f"{where}: fuse_merge needs stage1: pairwise (a joint recipe has one target, no stage 2)")
    for d in [cfg.pivot, *cfg.sources]:
        if not Path(d).is_dir():
            raise FusevalError(f"{where}: fuse model {d}: no such model directory")
    if not Path(cfg.data).is_file():
        raise FusevalError(f"{where}: fuse data {cfg.data}: no such file")
    if m.output == "pivot":
        return [(None, Path(cfg.pivot), None)]
    # The key is what the training sees: settings, the models' and data's contents, the sources' names (they
    # name the targets), not where the files are. Seeds are left out: each seed's outputs live in their own
    # seed-N folder, so adding a seed trains only that seed.
    training = cfg.model_dump(mode="json", exclude={"merge", "seeds", "pivot", "sources", "data"})
    if training["stage1"] == "pairwise":
        del training["stage1"]  # came later: pairwise recipes keep their keys
    key = digest("fuse", training, [store.model_hash(p) for p in [cfg.pivot, *cfg.sources]],
                 [Path(p).name for p in cfg.sources], store.file_sha(Path(cfg.data)))[:12]
    out = workspace / "fused" / key
    outputs = fuse_outputs(cfg)
    missing = [seed for seed in cfg.seeds if not all((out / f"seed-{seed}" / o / "config.json").exists()
                                                    for o in outputs)]
    if key not in done and missing:
        say(f"fuse {m.name}: {len(cfg.sources)} sources into the pivot, seeds {missing} -> {out}")
        run_fuse(cfg.model_copy(update={"seeds": missing}), out, progress=False)
        done[key] = out
    models = []
    for seed in cfg.seeds:
        src = out / f"seed-{seed}" / (fused_output(cfg) if m.output == "merged" else m.output)
        if m.output == "merged" and m.fuse_merge:
            targets = sorted((out / f"seed-{seed}").glob("target-*"))
            method = m.fuse_merge.get("method", "varm")
            mcfg = parse_merge_config({"merge_method": method, "base_model": cfg.pivot,
                                       "models": [{"model": str(t), "parameters": _target_params(method, targets)}
                                                  for t in targets],
                                       "parameters": m.fuse_merge.get("parameters", {}), "dtype": "float32",
                                       "seed": seed}, f"{where}.fuse_merge")
            src = workspace / "models" / f"{m.name}-{digest('stage2', m.fuse_merge, seed, key)[:12]}"
            if not (src / "fuseval_recipe.yml").exists():
                say(f"merge {m.name} seed {seed} ({mcfg.merge_method} of {len(targets)} targets) -> {src}")
                run_merge(mcfg, src)
        if not (src / "config.json").exists():
            raise FusevalError(f"{where}: output {m.output!r} is not among the fusion outputs in "
                               f"{out / f'seed-{seed}'}")
        models.append((seed, src, (src / "fuseval_recipe.yml").read_text() if (src / "fuseval_recipe.yml").exists()
                       else None))
    return models


def build_models(ls: LoadedSuite, store: Store, workspace: Path, backend: str, say: Say) -> list[Built]:
    """Every model of the suite as a checkpoint: existing ones checked, recipes built where missing."""
    for m in ls.models:  # the cheap checks first, before anything is built
        if m.kind == "model" and backend != "openai" and not Path(m.model).is_dir():
            raise FusevalError(f"{ls.path}: {ls.roles[m.name]} {m.name!r}: model {m.model}: no such checkpoint "
                               "directory")
        if isinstance(m.merge or m.fuse, str) and not Path(m.merge or m.fuse).is_file():
            raise FusevalError(f"{ls.path}: {ls.roles[m.name]} {m.name!r}: recipe {m.merge or m.fuse}: no such file")
    built: list[Built] = []
    fused: dict[str, Path] = {}
    for m in ls.models:
        where = f"{ls.path}: {ls.roles[m.name]} {m.name!r}"
        role = ls.roles[m.name]
        if m.kind == "model":
            if backend == "openai":
                built.append(Built(m.name, m.model, endpoint_hash(ls.suite.backend.base_url, m.model), role,
                                   m.name))
                continue
            built.append(Built(m.name, m.model, store.model_hash(m.model), role, m.name))
        elif m.kind == "merge":
            out = _merge(store, m, where, ls.path, workspace, say)
            built.append(Built(m.name, str(out), store.model_hash(out), role, m.name, kind="merge",
                               recipe=(out / "fuseval_recipe.yml").read_text()))
        else:
            runs = _fuse(store, m, where, ls, workspace, say, fused)
            for seed, path, recipe in runs:
                name = m.name if len(runs) == 1 else f"{m.name}@s{seed}"
                built.append(Built(name, str(path), store.model_hash(path), role, m.name, seed, "fuse", recipe))
    for b in built:
        store.add_model(b.name, path=None if backend == "openai" else b.path, recipe=b.recipe, content_hash=b.hash)
    return built

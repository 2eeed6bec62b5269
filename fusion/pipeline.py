"""FuseChat's two stages (DESIGN.md section 2.3, step 7), plus the honest control.

    fuseval fuse fuse.yml runs/fused

Stage 1: for each source S_k, the pivot's and S_k's teacher records are aligned onto the pivot's
tokens, combined per example by the fusion function, and the pivot is trained on them: target_k.
Stage 2: the targets are merged in parameter space (varm by default) with the pivot as base.
Control: the pivot trained on the same data for the same steps with gold labels only (λ = 1).

`stage1: joint` fuses FuseLLM's way instead: one target, target-joint, trained on the fusion function
over the pivot and every source at once, and no stage 2. Parameter merging assumes targets that are
light fine-tunes of the pivot; where stage 1 has to teach whole skills (the known-effect world: weight
moves of 70-75% of the pivot's norm), a merge of targets that learned different skills keeps neither,
and the joint target is the fused model that keeps them.

Output (per seed s): seed-s/target-<source>/ (joint: seed-s/target-joint/), seed-s/merged/ (pairwise
only), seed-s/control/, each a Hugging Face checkpoint with its tokenizer and `fuseval_recipe.yml`;
`fused_output(cfg)` names the end product. teachers/<model>/ holds the sparse
teacher records; fuse_report.json the mechanism (which model the fusion function picked, per
domain, and the share of response tokens whose distribution was transferred) and the training
summaries.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field

from fusion import align
from fusion.chat import encode_chat, load_tokenizer
from fusion.common.configfile import read_yaml, validate_config
from fusion.common.errors import FusevalError
from fusion.common.files import atomic_output_dir, atomic_write_text
from fusion.distill import (
    FUSION_FUNCTIONS,
    Candidate,
    TeacherRecord,
    TeacherStore,
    extract_teachers,
    record_key,
    topk_probs,
)
from fusion.train import Example, TrainConfig, train

log = logging.getLogger(__name__)


class FusionParams(BaseModel):
    """How teacher distributions are extracted, aligned and combined."""

    model_config = ConfigDict(extra="forbid")

    function: Literal["min_ce", "avg_ce"] = Field("min_ce", description="Fusion function over candidates.")
    top_k: int = Field(10, ge=1, description="Entries kept per response token.")
    temperature: float = Field(1.0, gt=0, description="τ applied to the top-K log-probs before renormalizing.")
    max_distance: int = Field(0, ge=0, description="Transfer across 1:1 pairs whose texts differ by at most this many "
                                                   "edits.")
    backend: Literal["transformers", "vllm"] = Field("transformers", description="Teacher extraction backend.")
    batch_size: int = Field(32, ge=1, description="Examples per extraction forward pass.")


class MergeStage(BaseModel):
    """Stage 2: how the targets are merged."""

    model_config = ConfigDict(extra="forbid")

    method: str = Field("varm", description="A registered merge method; the pivot is the base model.")
    parameters: dict[str, Any] = Field(default_factory=dict, description="Global merge parameters.")


class FuseConfig(BaseModel):
    """A FuseChat run: pivot, sources, fusion data, training and the stage-2 merge."""

    model_config = ConfigDict(extra="forbid")

    pivot: str = Field(description="The pivot/target model directory (its architecture and tokenizer are kept).")
    sources: list[str] = Field(min_length=1, description="Source model directories (any architecture/tokenizer).")
    data: str = Field(description="Fusion training conversations (jsonl with 'messages').")
    stage1: Literal["pairwise", "joint"] = Field(
        "pairwise", description="pairwise (FuseChat): a target per source, fused from the pivot and that source, "
                                "then merged in stage 2; joint (FuseLLM): one target fused from the pivot and every "
                                "source at once, and no stage 2.")
    fusion: FusionParams = FusionParams()
    train: TrainConfig = TrainConfig()
    merge: MergeStage = MergeStage()
    seeds: list[int] = Field(default=[0], min_length=1, description="Training seeds; each gives targets, merge and "
                                                                    "control.")
    control: bool = Field(True, description="Also train the gold-only control (λ = 1).")


JOINT = "joint"  # the joint target's name: target-joint


def target_names(cfg: FuseConfig) -> list[str]:
    """The stage-1 targets' names (their directories are target-<name>)."""
    return [JOINT] if cfg.stage1 == "joint" else [Path(s).name for s in cfg.sources]


def fused_output(cfg: FuseConfig) -> str:
    """The directory (under seed-s/) of the recipe's fused model: the stage-2 merge, or the joint target."""
    return f"target-{JOINT}" if cfg.stage1 == "joint" else "merged"


def fuse_outputs(cfg: FuseConfig) -> list[str]:
    """Every directory a finished seed holds."""
    targets = [f"target-{n}" for n in target_names(cfg)]
    return targets + (["merged"] if cfg.stage1 == "pairwise" else []) + (["control"] if cfg.control else [])


def load_fuse_config(path: str | Path) -> FuseConfig:
    """Read and validate a fuse config; relative paths are taken from the config's directory."""
    path = Path(path)
    cfg = validate_config(FuseConfig, read_yaml(path), str(path))
    here = path.resolve().parent
    fix = lambda p: str(p if os.path.isabs(p) else here / p)  # noqa: E731
    return cfg.model_copy(update={"pivot": fix(cfg.pivot), "sources": [fix(s) for s in cfg.sources],
                                  "data": fix(cfg.data)})


def _texts(tok, ids: np.ndarray) -> tuple[list[str], list[str | None]]:
    """Token strings and the text each stands for (None: special tokens)."""
    kind, specials = align.token_kind(tok), align.special_tokens(tok)
    strs = tok.convert_ids_to_tokens([int(i) for i in ids])
    return strs, [align.normalize_token(s, kind, specials) for s in strs]


def align_source(src: TeacherRecord, src_tok, tgt: TeacherRecord, tgt_tok, vocab_map: np.ndarray,
                 max_distance: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A source record moved onto the target's response tokens, turn by turn (ids, logprobs, transferred)."""
    if len(src.turns) != len(tgt.turns):
        raise FusevalError(f"source and target records have {len(src.turns)} and {len(tgt.turns)} turns")
    kinds = (align.token_kind(src_tok), align.token_kind(tgt_tok))
    s_strs, s_txt = _texts(src_tok, src.tokens)
    t_strs, t_txt = _texts(tgt_tok, tgt.tokens)
    pairs: list[tuple[int, int]] = []
    s0 = t0 = 0
    for ns, nt in zip(src.turns, tgt.turns):
        path = align.dtw_align(s_strs[s0:s0 + ns], t_strs[t0:t0 + nt], kinds=kinds)
        pairs += [(j + s0, i + t0) for j, i in
                  align.one_to_one_pairs(path, s_txt[s0:s0 + ns], t_txt[t0:t0 + nt], max_distance)]
        s0, t0 = s0 + ns, t0 + nt
    return align.transfer_topk(src.ids, src.logprobs, vocab_map, pairs, tgt.tokens)


def fused_examples(convs, pivot_dir: Path, pivot_store: TeacherStore, sources: list[tuple[Path, TeacherStore]],
                   params: FusionParams, cache_dir: Path) -> tuple[list[Example], dict]:
    """Training examples on the pivot's tokens with fused teachers, and the mechanism statistics."""
    p_tok = load_tokenizer(pivot_dir)
    s_toks = [load_tokenizer(d) for d, _ in sources]
    vmaps = [align.map_vocab(t, p_tok, cache_dir=cache_dir) for t in s_toks]
    fuse = FUSION_FUNCTIONS[params.function]
    names = ["pivot"] + [Path(d).name for d, _ in sources]
    picks: dict[str, Counter] = defaultdict(Counter)
    picks_noisy: dict[str, Counter] = defaultdict(Counter)  # examples whose gold answers are known to be wrong
    weight_sum: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(len(names)))
    teacher_tokens: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])  # [from a source, all]
    moved = total = 0
    examples = []
    for c in convs:
        ids, resp, _ = encode_chat(p_tok, c.messages)
        resp = resp[resp >= 1]
        p_rec = pivot_store.get(record_key(c))
        if len(p_rec.tokens) != len(resp) or not np.array_equal(p_rec.tokens, ids[resp]):
            raise FusevalError(f"teacher record of {c.qid} does not match the pivot's tokens; re-extract the teachers")
        cands = [Candidate(p_rec.ids.astype(np.int64), topk_probs(p_rec.logprobs, params.temperature), p_rec.ce)]
        for (_s_dir, s_store), s_tok, vmap in zip(sources, s_toks, vmaps):
            s_rec = s_store.get(record_key(c))
            a_ids, a_lp, done = align_source(s_rec, s_tok, p_rec, p_tok, vmap, params.max_distance)
            cands.append(Candidate(a_ids, topk_probs(a_lp, params.temperature), s_rec.ce))
            moved += int(done.sum())
            total += len(done)
        t_ids, t_probs, w = fuse(cands)
        domain = getattr(c, "domain", "") or "all"
        picks[domain][names[int(np.argmax(w))]] += 1
        if getattr(c, "noisy", False):
            picks_noisy[domain][names[int(np.argmax(w))]] += 1
        weight_sum[domain] += w
        teacher_tokens[domain][0] += float(len(resp) * (1.0 - w[0]))
        teacher_tokens[domain][1] += len(resp)
        examples.append(Example(ids, resp, t_ids, t_probs.astype(np.float32)))
    stats = {
        "picked": {d: dict(cnt) for d, cnt in sorted(picks.items())},
        "picked_on_noisy": {d: dict(cnt) for d, cnt in sorted(picks_noisy.items())},
        "mean_weight": {d: dict(zip(names, (v / sum(picks[d].values())).round(4).tolist()))
                        for d, v in weight_sum.items()},
        "transferred_share": moved / total if total else 0.0,
        # the share of the response tokens whose fused target came from a source (weight beyond the pivot's own)
        "teacher_token_share": {d: round(t / n, 4) if n else 0.0 for d, (t, n) in sorted(teacher_tokens.items())},
    }
    return examples, stats


def _train_from(pivot_dir: Path, examples: list[Example], cfg: TrainConfig, out: Path, recipe: dict,
                progress: bool) -> dict:
    """Train a copy of the pivot and save it (atomically) with the pivot's tokenizer and a recipe."""
    import torch
    from transformers import AutoModelForCausalLM

    from fusion.chat import write_generation_config

    if (out / "fuseval_recipe.yml").exists():
        done = yaml.safe_load((out / "fuseval_recipe.yml").read_text())
        if done != json.loads(json.dumps(recipe)):  # compare as plain data (tuples become lists)
            raise FusevalError(f"{out}: holds a model trained with another recipe; use a new output directory")
        return json.loads((out / "fuseval_train.json").read_text())
    tok = load_tokenizer(pivot_dir)
    model = AutoModelForCausalLM.from_pretrained(pivot_dir, dtype=torch.float32, use_safetensors=True)
    work = out.parent / f".{out.name}.train"  # checkpoints: a killed run resumes here
    summary = train(model, examples, cfg, work, tokenizer=tok, pad_id=tok.pad_token_id or 0, progress=progress)
    summary = {k: v for k, v in summary.items() if k != "losses"}
    with atomic_output_dir(out, force=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        write_generation_config(tmp, tok)
        atomic_write_text(tmp / "fuseval_train.json", json.dumps(summary, indent=1))
        atomic_write_text(tmp / "fuseval_recipe.yml", yaml.safe_dump(recipe, sort_keys=False))
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return summary


def run_fuse(cfg: FuseConfig, out_dir: str | Path, progress: bool = False) -> dict:
    """Run both stages (and the control) for every seed; return and write the report."""
    from fusion.conversations import encode_conversations, load_conversations
    from fusion.merge.config import parse_merge_config
    from fusion.merge.engine import run_merge

    out = Path(out_dir)
    pivot = Path(cfg.pivot)
    for d in [pivot, *map(Path, cfg.sources)]:
        if not (d / "config.json").exists():
            raise FusevalError(f"{d}: not a model directory (no config.json)")
        if not any(d.glob("*.safetensors")):  # transformers would unpickle a .bin; fuse never does
            raise FusevalError(f"{d}: no safetensors weights; fuse does not load pickle (.bin) checkpoints. Convert "
                               "it first: a linear merge of that one model with `fuseval merge --allow-pickle`")
    convs = load_conversations(Path(cfg.data))
    if not convs:
        raise FusevalError(f"{cfg.data}: no conversations")
    kw = dict(top_k=cfg.fusion.top_k, backend=cfg.fusion.backend, batch_size=cfg.fusion.batch_size)
    names = [Path(s).name for s in cfg.sources]
    if len(set(names)) != len(names) or "pivot" in names or JOINT in names:
        raise FusevalError(f"source directories need distinct names other than 'pivot' and '{JOINT}'")
    out.mkdir(parents=True, exist_ok=True)  # only once the inputs are known to be usable
    p_store = extract_teachers(pivot, convs, out / "teachers" / "pivot", **kw)
    s_stores = [extract_teachers(Path(s), convs, out / "teachers" / n, **kw) for s, n in zip(cfg.sources, names)]
    report: dict = {"config": cfg.model_dump(), "stage1": {}, "runs": {}}
    sources = [(Path(s), store) for s, store in zip(cfg.sources, s_stores)]
    # target name -> the sources fused into the pivot for it
    groups = [sources] if cfg.stage1 == "joint" else [[src] for src in sources]
    plan = dict(zip(target_names(cfg), groups))
    stage1 = {}
    for n, fused_sources in plan.items():
        stage1[n], report["stage1"][n] = fused_examples(convs, pivot, p_store, fused_sources, cfg.fusion,
                                                        out / "teachers")
    for seed in cfg.seeds:
        run: dict = {}
        tcfg = cfg.train.model_copy(update={"seed": seed})
        targets = []
        for n in plan:
            dest = out / f"seed-{seed}" / f"target-{n}"
            recipe = {"fuseval": "fusion stage 1", "pivot": str(pivot), "source": n, "seed": seed,
                      "fusion": cfg.fusion.model_dump(), "train": tcfg.model_dump()}
            if n == JOINT:
                recipe |= {"fuseval": "fusion stage 1, joint (no stage 2)", "sources": names}
            run[f"target-{n}"] = _train_from(pivot, stage1[n], tcfg, dest, recipe, progress)
            targets.append(dest)
        merged = out / f"seed-{seed}" / "merged"
        if cfg.stage1 == "pairwise" and not (merged / "fuseval_recipe.yml").exists():
            mcfg = parse_merge_config({"merge_method": cfg.merge.method, "base_model": str(pivot),
                                       "models": [{"model": str(t)} for t in targets],
                                       "parameters": cfg.merge.parameters, "dtype": "float32", "seed": seed})
            run_merge(mcfg, merged)
        if cfg.control:
            gold_cfg = tcfg.model_copy(update={"lam": 1.0})
            recipe = {"fuseval": "control: gold labels only", "pivot": str(pivot), "seed": seed,
                      "train": gold_cfg.model_dump()}
            run["control"] = _train_from(pivot, encode_conversations(load_tokenizer(pivot), convs), gold_cfg,
                                         out / f"seed-{seed}" / "control", recipe, progress)
        report["runs"][f"seed-{seed}"] = run
    atomic_write_text(out / "fuse_report.json", json.dumps(report, indent=1, default=str) + "\n")
    return report

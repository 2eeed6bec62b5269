"""The fusion training loop: one readable loop over tokenized chats with optional sparse teachers.

    from fusion.train import TrainConfig, train
    model = train(model, examples, TrainConfig(steps=300, lam=0.5), out_dir="runs/target")

Loss per response token r (DESIGN.md section 2.3, step 5), averaged over response tokens:

    L = λ · (−log Q(gold_r)) + (1 − λ) · (−Σ_k P_k · log Q(id_k))

where Q is the model's next-token distribution (log-softmax over the whole vocabulary) and
(id_k, P_k), k < K, the fused teacher's sparse top-K for that token; only those K entries are
touched. Examples without a teacher (or λ = 1) train on gold labels only: the honest control.

AdamW with a linear warmup into a cosine decay, gradient accumulation, bf16 autocast on GPUs that
support it, and checkpoints (`checkpoint-STEP/`: the model as safetensors via save_pretrained plus
`trainer_state.safetensors` / `trainer_state.json`; no pickle anywhere) from which a killed run
resumes at the same step with the same data order. Data order is a function of (seed, epoch), so a
resumed run sees exactly the batches the uninterrupted run would have seen.

Under `accelerate launch` (multi-GPU, when accelerate is installed) the model, optimizer and
batches go through an `Accelerator`; a plain `python` run uses none of that.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from fusion.common import faults
from fusion.common.errors import FusevalError
from fusion.common.files import atomic_output_dir, atomic_write_text

log = logging.getLogger(__name__)


class TrainConfig(BaseModel):
    """Hyper-parameters of one training run."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(300, ge=1, description="Optimizer steps.")
    batch_size: int = Field(16, ge=1, description="Examples per micro-batch.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    lr: float = Field(1e-3, gt=0, description="Peak learning rate.")
    warmup: int = Field(20, ge=0, description="Linear warmup steps before the cosine decay.")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Final learning rate as a fraction of lr.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW decoupled weight decay.")
    lam: float = Field(0.9, ge=0, le=1, description="λ: weight of the gold-label CE; 1 − λ goes to the teacher.")
    max_len: int = Field(256, ge=8, description="Longer examples are truncated (and counted).")
    seed: int = Field(0, description="Seeds data order and any initialization done here.")
    bf16: bool | None = Field(None, description="bf16 autocast; None = on for CUDA devices that support it.")
    checkpoint_every: int = Field(0, ge=0, description="Save a resumable checkpoint every N steps "
                                                       "(0: only at the end).")
    device: str = Field("cpu", description="torch device for a plain (non-accelerate) run.")


@dataclass
class Example:
    """A tokenized chat. resp_pos: indices into input_ids of response tokens (the ones trained on).
    teacher_ids/teacher_probs: [len(resp_pos), K] sparse targets per response token (ids −1 = padding)."""

    input_ids: np.ndarray
    resp_pos: np.ndarray
    teacher_ids: np.ndarray | None = None
    teacher_probs: np.ndarray | None = None


def truncate(examples: list[Example], max_len: int) -> tuple[list[Example], int]:
    """Cut examples to max_len tokens (dropping response tokens beyond it); return them and how many were cut."""
    out, cut = [], 0
    for ex in examples:
        if len(ex.input_ids) <= max_len:
            out.append(ex)
            continue
        cut += 1
        keep = ex.resp_pos < max_len
        t_ids = None if ex.teacher_ids is None else ex.teacher_ids[keep]
        t_probs = None if ex.teacher_probs is None else ex.teacher_probs[keep]
        out.append(Example(ex.input_ids[:max_len], ex.resp_pos[keep], t_ids, t_probs))
    return out, cut


def collate(batch: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad a micro-batch. Returns input_ids/attention_mask [B, T] and, per response token (flattened
    over the batch, N tokens): its row b, the position that predicts it (r − 1), its gold id and the
    teacher's [N, K] ids/probs (zeros where an example has no teacher)."""
    width = max(len(ex.input_ids) for ex in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    rows, pred, gold, t_ids, t_probs = [], [], [], [], []
    k = max((ex.teacher_ids.shape[1] for ex in batch if ex.teacher_ids is not None), default=1)
    for b, ex in enumerate(batch):
        n = len(ex.input_ids)
        ids[b, :n] = torch.from_numpy(ex.input_ids.astype(np.int64))
        mask[b, :n] = 1
        pos = ex.resp_pos[ex.resp_pos >= 1].astype(np.int64)  # token 0 has no predicting position
        rows.append(np.full(len(pos), b))
        pred.append(pos - 1)
        gold.append(ex.input_ids[pos])
        if ex.teacher_ids is not None:
            sel = ex.resp_pos >= 1
            ti = np.full((len(pos), k), -1, np.int64)
            tp = np.zeros((len(pos), k), np.float32)
            ti[:, :ex.teacher_ids.shape[1]] = ex.teacher_ids[sel]
            tp[:, :ex.teacher_probs.shape[1]] = ex.teacher_probs[sel]
        else:
            ti, tp = np.full((len(pos), k), -1, np.int64), np.zeros((len(pos), k), np.float32)
        t_ids.append(ti)
        t_probs.append(tp)
    cat = lambda xs, dt: torch.from_numpy(np.concatenate(xs).astype(dt))  # noqa: E731
    return {"input_ids": ids, "attention_mask": mask, "rows": cat(rows, np.int64), "pred": cat(pred, np.int64),
            "gold": cat(gold, np.int64), "teacher_ids": cat(t_ids, np.int64), "teacher_probs": cat(t_probs, np.float32)}


def fusion_loss(logits: torch.Tensor, batch: dict[str, torch.Tensor], lam: float) -> tuple[torch.Tensor, dict]:
    """λ·CE(gold) + (1−λ)·CE(P_fused, Q) over the batch's response tokens (see the module docstring)."""
    h = logits[batch["rows"], batch["pred"]].float()  # [N, V]: the logits that predict each response token
    logq = torch.log_softmax(h, dim=-1)
    ce_gold = -logq.gather(1, batch["gold"][:, None]).squeeze(1)  # [N]
    loss = lam * ce_gold.mean()
    parts = {"ce_gold": ce_gold.detach().mean().item()}
    if lam < 1.0:
        t_ids, t_probs = batch["teacher_ids"], batch["teacher_probs"]
        valid = t_ids >= 0
        # Tokens without a teacher have all-(-1) ids and zero probs: their fused term is 0.
        ce_teacher = -(t_probs * logq.gather(1, t_ids.clamp_min(0)) * valid).sum(1)  # [N]
        loss = loss + (1.0 - lam) * ce_teacher.mean()
        parts["ce_teacher"] = ce_teacher.detach().mean().item()
    return loss, parts


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to cfg.lr, then cosine decay to cfg.lr·min_lr_ratio at cfg.steps."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def batch_order(n: int, step: int, cfg: TrainConfig) -> list[int]:
    """Indices of the examples of optimizer step `step`: epoch-wise permutations seeded by (seed, epoch)."""
    per_step = cfg.batch_size * cfg.grad_accum
    start = step * per_step
    out = []
    while len(out) < per_step:
        epoch, offset = divmod(start + len(out), n)
        perm = np.random.default_rng([cfg.seed, epoch]).permutation(n)
        out += perm[offset:offset + per_step - len(out)].tolist()
    return out


def _save_checkpoint(out_dir: Path, step: int, model, opt: torch.optim.Optimizer, cfg: TrainConfig, tokenizer) -> Path:
    from safetensors.torch import save_file

    path = out_dir / f"checkpoint-{step}"
    with atomic_output_dir(path, force=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        tensors, scalars = {}, {}
        for i, p in enumerate(p for g in opt.param_groups for p in g["params"]):
            for key, val in opt.state.get(p, {}).items():
                if torch.is_tensor(val) and val.ndim > 0:
                    tensors[f"{i}.{key}"] = val.detach().cpu().contiguous()
                else:
                    scalars[f"{i}.{key}"] = float(val)
        save_file(tensors, tmp / "trainer_state.safetensors")
        atomic_write_text(tmp / "trainer_state.json", json.dumps({"step": step, "scalars": scalars,
                                                                  "config": cfg.model_dump()}, indent=1))
    for old in out_dir.glob("checkpoint-*"):  # keep only the newest
        if old != path and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    return path


def latest_checkpoint(out_dir: Path) -> Path | None:
    done = [p for p in out_dir.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def _restore(ckpt: Path, model, opt: torch.optim.Optimizer) -> int:
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    state = json.loads((ckpt / "trainer_state.json").read_text())
    loaded = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32, use_safetensors=True)
    model.load_state_dict(loaded.state_dict())
    tensors = load_file(ckpt / "trainer_state.safetensors")
    for i, p in enumerate(p for g in opt.param_groups for p in g["params"]):
        st = {}
        for key in ("exp_avg", "exp_avg_sq"):
            if f"{i}.{key}" in tensors:
                st[key] = tensors[f"{i}.{key}"].to(p.device)
        if f"{i}.step" in state["scalars"]:
            st["step"] = torch.tensor(state["scalars"][f"{i}.step"])
        if st:
            opt.state[p] = st
    return int(state["step"])


def train(model, examples: list[Example], cfg: TrainConfig, out_dir: str | Path | None = None, *,
          tokenizer=None, pad_id: int = 0, progress: bool = False) -> dict:
    """Train `model` in place on `examples`; return a summary (losses, truncated count, resumed step).

    With out_dir, checkpoints go to out_dir/checkpoint-STEP and a run resumes from the newest one.
    """
    if not examples:
        raise FusevalError("no training examples")
    examples, n_cut = truncate(examples, cfg.max_len)
    if n_cut:
        log.warning("%d of %d examples were longer than max_len=%d tokens and were truncated", n_cut, len(examples),
                    cfg.max_len)
    n_all = len(examples)
    examples = [ex for ex in examples if (ex.resp_pos >= 1).any()]
    if not examples:
        raise FusevalError("no example has a response token to train on")
    if len(examples) < n_all:
        log.warning("%d examples have no response token to train on (empty responses or truncated away); skipped",
                    n_all - len(examples))
    accel = _accelerator()
    device = accel.device if accel else torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    out = Path(out_dir) if out_dir is not None else None
    start = 0
    if out is not None and (ckpt := latest_checkpoint(out)) is not None:
        start = _restore(ckpt, model, opt)
        log.info("resumed from %s at step %d", ckpt, start)
    if accel:
        model, opt = accel.prepare(model, opt)
    bf16 = cfg.bf16 if cfg.bf16 is not None else (device.type == "cuda" and torch.cuda.is_bf16_supported())
    losses: list[float] = []
    bar = _progress(progress, cfg.steps, start)
    for step in range(start, cfg.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        order = batch_order(len(examples), step, cfg)
        total = 0.0
        for m in range(cfg.grad_accum):
            mb = [examples[i] for i in order[m * cfg.batch_size:(m + 1) * cfg.batch_size]]
            batch = {k: v.to(device) for k, v in collate(mb, pad_id).items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            loss, _ = fusion_loss(logits, batch, cfg.lam)
            loss = loss / cfg.grad_accum
            (accel.backward(loss) if accel else loss.backward())
            total += loss.detach().item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(total)
        if bar:
            bar[0].update(bar[1], advance=1, description=f"train loss {total:.3f}")
        done = step + 1
        if out is not None and (done == cfg.steps or (cfg.checkpoint_every and done % cfg.checkpoint_every == 0)):
            if accel is None or accel.is_main_process:
                _save_checkpoint(out, done, accel.unwrap_model(model) if accel else model, opt, cfg, tokenizer)
        faults.point("train.step")
    if bar:
        bar[0].stop()
    model.eval()
    return {"steps": cfg.steps, "resumed_at": start, "truncated": n_cut, "losses": losses,
            "final_loss": float(np.mean(losses[-10:])) if losses else None}


def _accelerator():
    """An Accelerator under `accelerate launch` (WORLD_SIZE > 1), else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    try:
        from accelerate import Accelerator
    except ImportError as e:
        raise FusevalError("a distributed launch needs the accelerate package (pip install accelerate)") from e
    return Accelerator()


def _progress(enabled: bool, total: int, start: int):
    if not enabled:
        return None
    from rich.progress import Progress

    p = Progress(transient=True)
    p.start()
    task = p.add_task("train", total=total, completed=start)
    return p, task


__all__ = ["Example", "TrainConfig", "collate", "fusion_loss", "lr_at", "train", "truncate", "latest_checkpoint"]

"""Domain variants of a real chat model, trained on CPU in minutes: merge candidates of SmolLM2-135M-Instruct.

    root = build_real_variants("runs/real")     # runs/real/real-KEY/{smollm2, variant-numbers, variant-records}

SmolLM2-135M-Instruct comes from the registry assets (`fusion.assets`, imported from its GGUF in bf16).
Each variant fine-tunes only its top blocks (and the final norm) on some of the zoo's domains, rendered in
SmolLM2's own ChatML template with its default system prompt, for a few hundred short examples; the
embeddings, tied to the output layer, stay as they are. The variants share the base, so merging them
(linear, TIES, ...) is the usual merge of fine-tunes of one model. Cached under root/real-KEY by a hash of
the spec, like the tiny worlds.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field

from fusion.chat import load_tokenizer
from fusion.common.files import atomic_output_dir, atomic_write_text
from fusion.conversations import encode_conversations
from fusion.train import TrainConfig, train
from fusion.zoo import domains as D


class RealVariantsSpec(BaseModel):
    """What the variants learn and how long they train."""

    model_config = ConfigDict(extra="forbid")

    version: int = 1
    seed: int = 0
    variants: dict[str, list[str]] = Field(
        default_factory=lambda: {"numbers": ["arithmetic", "comparison"], "records": ["extraction", "code"]},
        description="Variant name -> the zoo domains it is fine-tuned on.")
    per_domain: int = Field(300, ge=1, description="Training conversations per domain.")
    top_blocks: int = Field(4, ge=1, description="Decoder blocks trained, counted from the top.")
    steps: int = Field(120, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(2e-4, gt=0)

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(), sort_keys=True).encode()).hexdigest()[:10]


def trainable_top(model, top_blocks: int) -> int:
    """Freeze everything but the top `top_blocks` decoder blocks and the final norm; return the trainable count."""
    blocks = model.model.layers
    for p in model.parameters():
        p.requires_grad_(False)
    for p in [*blocks[len(blocks) - top_blocks:].parameters(), *model.model.norm.parameters()]:
        p.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def train_variant(base: Path, domains: list[str], spec: RealVariantsSpec, out_dir: Path) -> dict:
    """Fine-tune `base`'s top blocks on `domains` (train split) and save it in bf16 with its tokenizer."""
    from transformers import AutoModelForCausalLM

    tok = load_tokenizer(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, use_safetensors=True)
    trained = trainable_top(model, spec.top_blocks)
    convs = [c for d in domains for c in D.generate(d, spec.per_domain, spec.seed, "train")]
    cfg = TrainConfig(steps=spec.steps, batch_size=spec.batch_size, lr=spec.lr, lam=1.0, seed=spec.seed,
                      warmup=min(10, spec.steps // 10), max_len=160)
    summary = train(model, encode_conversations(tok, convs), cfg, pad_id=tok.pad_token_id or 0)
    model.to(torch.bfloat16)
    with atomic_output_dir(out_dir, force=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        shutil.copy2(base / "generation_config.json", tmp / "generation_config.json")  # every end token
    summary.pop("losses", None)
    return {**summary, "trainable_parameters": trained, "domains": domains}


def build_real_variants(root: str | Path, spec: RealVariantsSpec | None = None) -> Path:
    """Build (or reuse) root/real-KEY: `smollm2` (the registry's model, bf16) and one `variant-NAME` per variant."""
    from fusion.assets import smollm2_dir

    spec = spec or RealVariantsSpec()
    out = Path(root) / f"real-{spec.key()}"
    if (out / "variants.json").exists():
        return out
    base = smollm2_dir()
    with atomic_output_dir(out, force=True) as tmp:
        (tmp / "smollm2").symlink_to(base.resolve(), target_is_directory=True)
        summaries = {name: train_variant(base, doms, spec, tmp / f"variant-{name}")
                     for name, doms in spec.variants.items()}
        atomic_write_text(tmp / "variants.json", json.dumps({"spec": spec.model_dump(), "base": str(base),
                                                             "training": summaries}, indent=2))
    return out

"""The tiny world: specialists of different tokenizer families and architectures on synthetic
chat domains (fusion/zoo/domains.py), trained briefly on CPU.

    world = build_world("runs/world")                  # runs/world/world-KEY, built once per spec
    tests = load_conversations(world / "test.jsonl")   # fusion.conversations
    correct = score(world / "pivot", tests)            # [n_conversations, 2 turns] booleans

A world is cached under its directory, keyed by a hash of its `WorldSpec`; bump `version` when
the construction changes so old worlds rebuild.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from fusion.chat import answer_two_turns, load_tokenizer, write_generation_config
from fusion.common.files import atomic_output_dir, atomic_write_text
from fusion.conversations import encode_conversations, save_conversations
from fusion.train import TrainConfig, train
from fusion.zoo import domains as D
from fusion.zoo.tokenizers import train_bpe_tokenizer, train_sp_tokenizer

WORLD_TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}" \
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}"


class ModelSpec(BaseModel):
    """One model of the world: its architecture, tokenizer family and what it is trained on."""

    model_config = ConfigDict(extra="forbid")

    name: str
    arch: Literal["llama", "qwen3", "gpt_neox"]
    tokenizer: Literal["bpe", "sp", "llama-spm"] = Field(
        description="bpe or sp: trained on the world's texts; llama-spm: llama.cpp's real Llama-2 vocabulary "
                    "(32,000 tokens, fusion.assets), with a Llama-2 chat template")
    vocab_size: int = 600
    hidden: int = 128
    layers: int = 2
    heads: int = 4
    intermediate: int = 384
    domains: list[str]
    light_domains: list[str] = Field(default_factory=list,
                                     description="Seen a little (light_per_domain examples each).")
    light_per_domain: int = 100
    steps: int = 400
    lr: float = 3e-3
    batch_size: int = 32


class WorldSpec(BaseModel):
    """The embedded world: a pivot weak on the sources' domains and source specialists."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(3, description="Bumped when the world's construction changes, so caches rebuild.")
    seed: int = 0
    # The pivot is a generalist of sorts: fluent in formatting, and it has seen a few examples of
    # every other domain (it knows the answer phrasing, not the skill), as a pretrained chat model
    # would. So on a source's domain the source has the lower CE, elsewhere the pivot does.
    pivot: ModelSpec = ModelSpec(name="pivot", arch="llama", tokenizer="bpe", vocab_size=700, domains=["formatting"],
                                 light_domains=["arithmetic", "comparison", "extraction", "code"])
    sources: list[ModelSpec] = [
        ModelSpec(name="source_numbers", arch="qwen3", tokenizer="sp", vocab_size=500,
                  domains=["arithmetic", "comparison"]),
        ModelSpec(name="source_records", arch="gpt_neox", tokenizer="bpe", vocab_size=420,
                  domains=["extraction", "code"]),
    ]
    train_per_domain: int = 3000
    fusion_per_domain: int = 600
    fusion_noise: float = Field(0.3, ge=0, le=1, description="share of source-domain fusion answers that are wrong")
    fusion_answers: Literal["noisy", "shuffled"] = Field(
        "noisy", description="noisy: fusion_noise of the sources' domains' answers are plausible wrong ones; "
                             "shuffled: every answer there is another question's (zoo.domains.shuffle_answers)")
    test_per_domain: int = 60
    real_sources: dict[Literal["smollm2"], list[str]] = Field(
        default_factory=dict, description="Real chat models from the registry assets as further sources (not "
                                          "trained here), each with the domains the fusion data gives it")

    @property
    def real_domains(self) -> set[str]:
        """The domains the fusion data gives the real sources."""
        return {d for v in self.real_sources.values() for d in v}

    def key(self) -> str:
        d = self.model_dump()
        for late, default in (("fusion_answers", "noisy"), ("real_sources", {})):
            if d[late] == default:  # fields that came later: worlds without them keep their keys
                del d[late]
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]


def known_effect_spec() -> WorldSpec:
    """The positive control: a world where fusion must help if it works at all.

    The pivot has never seen the sources' domains, and the fusion data's answers on those domains are
    shuffled (each question carries another question's answers): training on the labels alone learns
    the phrasing but not the skill, while the sources, who have the skill, can teach it. A fused model
    that does not beat the gold-label control here points at a defect (alignment, the fusion function's
    choices, the loss weighting, the stage-2 merge), not at the world.
    """
    base = WorldSpec()
    return base.model_copy(update={"pivot": base.pivot.model_copy(update={"light_domains": []}),
                                   "fusion_noise": 0.0, "fusion_answers": "shuffled"})


def real_teacher_spec() -> WorldSpec:
    """A real teacher: SmolLM2-135M-Instruct (49,152 tokens, ChatML) fused into a pivot of another real
    vocabulary (llama.cpp's Llama-2 one, 32,000 tokens), both from the registry assets.

    The pivot knows formatting only; the fusion data's arithmetic and code answers are shuffled, as in the
    known-effect world, so only the teacher's distributions can carry those skills. SmolLM2 answers none of
    the zoo's questions in the exact form the checks want, but teacher-forced along the answer's phrasing
    its next-token distribution often ranks the right digit first: whether that transfers is the question.
    """
    pivot = ModelSpec(name="pivot", arch="llama", tokenizer="llama-spm", domains=["formatting"])
    return WorldSpec(pivot=pivot, sources=[], real_sources={"smollm2": ["arithmetic", "code"]}, fusion_noise=0.0,
                     fusion_answers="shuffled", fusion_per_domain=400)


WORLDS = {"default": WorldSpec, "known-effect": known_effect_spec, "real-teacher": real_teacher_spec}


def model_config(spec: ModelSpec, tok) -> dict:
    """A Hugging Face config dict for a world model, its special ids taken from its tokenizer."""
    from transformers import GPTNeoXConfig, LlamaConfig, Qwen3Config

    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    common = dict(vocab_size=len(tok), hidden_size=spec.hidden, num_hidden_layers=spec.layers,
                  num_attention_heads=spec.heads, intermediate_size=spec.intermediate,
                  max_position_embeddings=256, tie_word_embeddings=False, **ids)
    if spec.arch == "llama":
        cfg, arch = LlamaConfig(num_key_value_heads=spec.heads, **common), "LlamaForCausalLM"
    elif spec.arch == "qwen3":
        # (Not Qwen2: transformers 5 forces its Qwen2 tokenizer class on any qwen2 checkpoint.)
        cfg, arch = Qwen3Config(num_key_value_heads=spec.heads, head_dim=spec.hidden // spec.heads, **common), \
            "Qwen3ForCausalLM"
    else:
        cfg, arch = GPTNeoXConfig(rotary_pct=0.5, use_parallel_residual=True, hidden_act="gelu", **common), \
            "GPTNeoXForCausalLM"
    d = cfg.to_dict()
    d["architectures"] = [arch]
    return d


# Llama-2's chat format; the bos token is part of the rendered text (chat encodings add no special tokens).
LLAMA2_TEMPLATE = "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} " \
                  "[/INST]{% else %} {{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"


def world_tokenizer(spec: ModelSpec, texts: list[str], out_dir: Path | None = None):
    if spec.tokenizer == "llama-spm":
        from fusion.assets import tokenizer_dir

        tok = load_tokenizer(tokenizer_dir("llama-spm"))
        tok.chat_template, tok.pad_token = LLAMA2_TEMPLATE, tok.unk_token
        if out_dir is not None:
            tok.save_pretrained(out_dir)
        return tok
    trainer = train_bpe_tokenizer if spec.tokenizer == "bpe" else train_sp_tokenizer
    return trainer(texts, spec.vocab_size, out_dir, chat_template=WORLD_TEMPLATE)


def train_specialist(spec: ModelSpec, tok, seed: int, train_per_domain: int, out_dir: Path, progress: bool = False):
    """Initialize a model of `spec` and train it on its domains' train split; save it with its tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM


    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**{k: v for k, v in model_config(spec, tok).items()
                                                                     if k != "architectures"}))
    convs = [c for d in spec.domains for c in D.generate(d, train_per_domain, seed, "train")]
    convs += [c for d in spec.light_domains for c in D.generate(d, spec.light_per_domain, seed + 500, "train")]
    examples = encode_conversations(tok, convs)
    cfg = TrainConfig(steps=spec.steps, batch_size=spec.batch_size, lr=spec.lr, lam=1.0, seed=seed,
                      warmup=min(30, spec.steps // 10))
    summary = train(model, examples, cfg, progress=progress, pad_id=tok.pad_token_id)
    with atomic_output_dir(out_dir, force=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        write_generation_config(tmp, tok)
    return summary


def real_source(name: str, out_dir: Path) -> None:
    """A registry-asset chat model as a world source, imported from its GGUF in float32 (exact dequantization)."""
    from fusion.assets import smollm2_gguf
    from fusion.gguf import import_gguf

    assert name == "smollm2", name  # the only one WorldSpec.real_sources admits
    import_gguf(smollm2_gguf(), out_dir, dtype="float32", force=True)


def build_world(root: str | Path, spec: WorldSpec | None = None, progress: bool = False) -> Path:
    """Build (or reuse) the world under root/world-KEY: tokenizers, pivot, sources, fusion and test data.

    Returns the world directory, which holds world.json (the spec and training summaries),
    one HF model directory per model, fusion.jsonl (the fusion training set) and test.jsonl.
    """
    spec = spec or WorldSpec()
    out = Path(root) / f"world-{spec.key()}"
    if (out / "world.json").exists():
        write_fuse_recipe(out, spec)
        return out
    all_domains = sorted({d for m in [spec.pivot, *spec.sources] for d in m.domains + m.light_domains}
                         | spec.real_domains)
    texts = D.corpus(all_domains, 400, seed=spec.seed)
    with atomic_output_dir(out, force=True) as tmp:
        summaries = {}
        for i, m in enumerate([spec.pivot, *spec.sources]):
            tok = world_tokenizer(m, texts)
            summaries[m.name] = train_specialist(m, tok, spec.seed + i, spec.train_per_domain, tmp / m.name, progress)
            summaries[m.name].pop("losses")
        for name in spec.real_sources:
            real_source(name, tmp / name)
        source_domains = {d for s in spec.sources for d in s.domains} | spec.real_domains
        fusion = [c for d in all_domains for c in D.generate(
            d, spec.fusion_per_domain, spec.seed + 1000, "train",
            noise=spec.fusion_noise if d in source_domains else 0.0)]
        if spec.fusion_answers == "shuffled":
            fusion = D.shuffle_answers(fusion, spec.seed + 1000, domains=source_domains)
        test = [c for d in all_domains
                for c in D.generate(d, spec.test_per_domain, spec.seed + 2000, "test", unique=True)]
        save_conversations(fusion, tmp / "fusion.jsonl")
        save_conversations(test, tmp / "test.jsonl")
        atomic_write_text(tmp / "world.json", json.dumps({"spec": spec.model_dump(), "training": summaries}, indent=2))
    write_fuse_recipe(out, spec)
    return out


# The world's FuseChat recipe. λ = 0.5 rather than FuseChat's 0.9: the fusion data's answers on the
# sources' domains are noisy (fusion_noise), and the teachers' correction has to outweigh them.
# Steps and learning rate are what a tiny pivot needs to pick up a skill on 2 CPU cores.
WORLD_FUSE_RECIPE = {
    "fusion": {"function": "min_ce", "top_k": 10, "temperature": 1.0, "max_distance": 0},
    "train": {"steps": 600, "batch_size": 32, "lr": 1e-3, "warmup": 20, "lam": 0.5},
    "merge": {"method": "varm"},
    "seeds": [0, 1],
    "control": True,
}


def write_fuse_recipe(world: Path, spec: WorldSpec) -> Path:
    """world/fuse.yml: the pipeline recipe over the world's models (paths relative to the world)."""
    import yaml

    recipe = {"pivot": spec.pivot.name, "sources": [s.name for s in spec.sources] + list(spec.real_sources),
              "data": "fusion.jsonl",
              **WORLD_FUSE_RECIPE}
    path = Path(world) / "fuse.yml"
    text = ("# FuseChat recipe for the tiny world: fuseval fuse fuse.yml OUT_DIR\n"
            + yaml.safe_dump(recipe, sort_keys=False))
    if not path.exists() or path.read_text() != text:
        atomic_write_text(path, text)
    return path


def score(model_dir: str | Path, convs, batch_size: int = 64) -> np.ndarray:
    """Exact-answer correctness [n_conversations, n_turns] of a model's greedy two-turn answers."""
    from transformers import AutoModelForCausalLM


    tok = load_tokenizer(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, use_safetensors=True).eval()
    answers = answer_two_turns(model, tok, [c.prompt_turns() for c in convs], batch_size=batch_size)
    return np.array([D.check(c, a) for c, a in zip(convs, answers)], dtype=bool)

"""The tiny local world: small random Hugging Face checkpoints and tokenizers, built without a hub.

    python -m fusion.zoo merge-set runs/zoo --size tiny   # base + 2 fine-tuned-like variants

`merge_set` writes a base model and variants φ_k = θ + δ_k whose deltas differ per layer (each
variant "specializes" in a different depth band and is sparse in a different way), so merge
methods produce visibly different results. Checkpoints are written tensor by tensor with the
streaming writer, so the ~1B-parameter benchmark set never needs a whole model in memory.
Built sets are cached under their directory, keyed by their parameters.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from typing import Literal

from fusion.errors import FusevalError
from fusion.files import atomic_output_dir, atomic_write_text
from fusion.io import DEFAULT_SHARD_BYTES, ShardedWriter, dtype_name, parse_dtype
from fusion.merge.params import layer_index

# A small built-in corpus for the tokenizer: enough byte pairs for a few hundred merges.
_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Merge the models, then measure whether the merged model got better.",
    "What is 12 plus 30? The answer is 42.",
    "Extract the name from the record: name=Ada; city=Paris; age=36.",
    "Rewrite the sentence in upper case and keep the punctuation.",
    "def add(a, b):\n    return a + b\nprint(add(2, 3))",
    "Which is larger, 17 or 71? 71 is larger than 17.",
    "User: hello there! Assistant: Hello, how can I help you today?",
]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@dataclass(frozen=True)
class ZooSize:
    """Shape of a Llama-family zoo model."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int


SIZES = {
    # ~0.2M parameters: unit and end-to-end tests.
    "tiny": ZooSize(512, 64, 176, 4, 4, 2),
    # ~3.4M parameters: "a few million", still seconds to build.
    "small": ZooSize(2048, 256, 688, 4, 8, 4),
    # ~1.0B parameters: benchmarks/perf/merge.py.
    "1b": ZooSize(32000, 2048, 5632, 20, 32, 4),
}


def llama_config(size: ZooSize, dtype: torch.dtype = torch.float32) -> dict:
    """A Hugging Face LlamaConfig dict for a zoo size."""
    from transformers import LlamaConfig

    cfg = LlamaConfig(**asdict(size), max_position_embeddings=512, tie_word_embeddings=False,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0)
    d = cfg.to_dict()
    d["architectures"] = ["LlamaForCausalLM"]
    d["torch_dtype" if "torch_dtype" in d else "dtype"] = dtype_name(dtype)
    return d


def tensor_shapes(config: dict) -> list[tuple[str, tuple[int, ...]]]:
    """Parameter names and shapes of a config's model, from a meta-device instance (no memory)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(**{k: v for k, v in config.items() if k not in ("architectures",)})
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    return [(n, tuple(t.shape)) for n, t in model.state_dict().items()]


SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>"]


def _save_fast(tok, out_dir: Path | None, chat_template: str | None, unk: str | None = None):
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token=unk)
    fast.chat_template = chat_template
    if out_dir is not None:
        fast.save_pretrained(out_dir)
    return fast


def train_bpe_tokenizer(texts, vocab_size: int, out_dir: Path | None = None, chat_template: str | None = CHAT_TEMPLATE):
    """A byte-level BPE tokenizer (GPT-2 family: `Ġ` for a space, every byte a base symbol) trained
    on `texts`; saved with a chat template when `out_dir` is given. Returns the fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    # Digits one by one (as Llama and Qwen tokenizers do), so numbers align across tokenizers.
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return _save_fast(tok, out_dir, chat_template)


def train_sp_tokenizer(texts, vocab_size: int, out_dir: Path | None = None, chat_template: str | None = CHAT_TEMPLATE):
    """A SentencePiece-style Unigram tokenizer (Llama-1/T5 family: `▁` marks a word start, bytes
    outside the vocabulary fall back to `<0x..>` tokens) trained on `texts`. Returns the fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    specials = ["<unk>"] + SPECIAL_TOKENS
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")])
    n_bytes = 256
    trainer = trainers.UnigramTrainer(vocab_size=max(vocab_size - n_bytes, len(specials) + 1), special_tokens=specials,
                                      unk_token="<unk>", show_progress=False)
    tok.train_from_iterator(texts, trainer)
    # Rebuild with the 256 byte-fallback pieces appended (the trainer does not add them itself).
    pieces = json.loads(tok.to_str())["model"]["vocab"]
    have = {p for p, _ in pieces}
    floor = min(score for _, score in pieces) - 1.0
    pieces += [[f"<0x{b:02X}>", floor] for b in range(n_bytes) if f"<0x{b:02X}>" not in have]
    out = Tokenizer(models.Unigram([tuple(p) for p in pieces], unk_id=0, byte_fallback=True))
    out.pre_tokenizer = tok.pre_tokenizer
    out.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    out.add_special_tokens(specials)
    return _save_fast(out, out_dir, chat_template, unk="<unk>")


def build_tokenizer(out_dir: Path, vocab_size: int = 512) -> None:
    """Train a byte-level BPE tokenizer (Ġ-style) on the built-in corpus and save it with a chat template."""
    train_bpe_tokenizer(_CORPUS * 4, vocab_size, out_dir)


def _init_tensor(name: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    if len(shape) == 1:  # RMSNorm gains
        return 1.0 + 0.02 * torch.randn(shape, generator=gen)
    return 0.02 * torch.randn(shape, generator=gen)


def _delta_scale(name: str, num_layers: int, variant: int, n_variants: int) -> float:
    """Per-layer delta size: variant k is strongest in its own band of layers (a 'specialist')."""
    idx = layer_index(name)
    if idx is None:
        return 0.3
    center = (variant + 0.5) / n_variants
    pos = idx / max(num_layers - 1, 1)
    return 0.2 + 1.5 * max(0.0, 1.0 - abs(pos - center) * 2.0)


def write_checkpoint(out_dir: Path, config: dict, make_tensor, dtype: torch.dtype,
                     shard_bytes: int = DEFAULT_SHARD_BYTES, tokenizer_from: Path | None = None) -> None:
    """Write a checkpoint whose tensors come from `make_tensor(name, shape)`, atomically."""
    shapes = tensor_shapes(config)
    with atomic_output_dir(out_dir, force=True) as tmp:
        writer = ShardedWriter(tmp, [(n, s, dtype) for n, s in shapes], shard_bytes)
        for name, shape in shapes:
            writer.write(name, make_tensor(name, shape))
        writer.finish()
        atomic_write_text(tmp / "config.json", json.dumps(config, indent=2) + "\n")
        atomic_write_text(tmp / "generation_config.json", json.dumps(
            {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "do_sample": False}, indent=2) + "\n")
        if tokenizer_from is not None:
            build_tokenizer(tmp, vocab_size=min(512, config["vocab_size"]))


def _seeded(seed: int, name: str) -> torch.Generator:
    h = int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little") & (2**63 - 1)
    return torch.Generator().manual_seed(h)


def merge_set(root: str | Path, size: str = "tiny", n_variants: int = 2, seed: int = 0, dtype: str = "float32",
              shard_bytes: int = DEFAULT_SHARD_BYTES, delta_std: float = 0.004) -> dict[str, Path]:
    """Build (or reuse) a base model and `n_variants` fine-tuned-like variants under `root`.

    Returns {"base": path, "variant1": path, ...}. Variant deltas are Gaussian with a per-layer
    scale (see `_delta_scale`) and 30% of entries exactly zero, like a sparse fine-tune.
    """
    params = {"size": size, "n_variants": n_variants, "seed": seed, "dtype": dtype, "shard_bytes": shard_bytes,
              "delta_std": delta_std, "format": 1}
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    home = Path(root) / f"{size}-{key}"
    paths = {"base": home / "base", **{f"variant{k + 1}": home / f"variant{k + 1}" for k in range(n_variants)}}
    if (home / "zoo.json").exists():
        return paths
    torch_dtype = parse_dtype(dtype)
    config = llama_config(SIZES[size], torch_dtype)
    n_layers = config["num_hidden_layers"]

    def base_tensor(name, shape):
        return _init_tensor(name, shape, _seeded(seed, name))

    write_checkpoint(paths["base"], config, base_tensor, torch_dtype, shard_bytes, tokenizer_from=home)
    for k in range(n_variants):
        def variant_tensor(name, shape, k=k):
            gen = _seeded(seed * 1000 + k + 1, name)
            delta = torch.randn(shape, generator=gen) * (delta_std * _delta_scale(name, n_layers, k, n_variants))
            delta[torch.rand(shape, generator=gen) < 0.3] = 0.0
            return base_tensor(name, shape) + delta

        write_checkpoint(paths[f"variant{k + 1}"], config, variant_tensor, torch_dtype, shard_bytes, tokenizer_from=home)
    atomic_write_text(home / "zoo.json", json.dumps(params, indent=2) + "\n")
    return paths


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Build the tiny local model zoo.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    ms = sub.add_parser("merge-set", help="base + fine-tuned-like variants for merge tests and benchmarks")
    ms.add_argument("root")
    ms.add_argument("--size", choices=sorted(SIZES), default="tiny")
    ms.add_argument("--variants", type=int, default=2)
    ms.add_argument("--seed", type=int, default=0)
    ms.add_argument("--dtype", default="float32")
    ms.add_argument("--shard-bytes", type=int, default=DEFAULT_SHARD_BYTES)
    a = ap.parse_args(argv)
    for role, path in merge_set(a.root, a.size, a.variants, a.seed, a.dtype, a.shard_bytes).items():
        print(f"{role}\t{path}")


if __name__ == "__main__":
    main()


# ----------------------------------------------------------------------------------------------
# The tiny world: specialists of different tokenizer families and architectures on synthetic
# chat domains (fusion/domains.py), trained briefly on CPU.

WORLD_TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}" \
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}"


class ModelSpec(BaseModel):
    """One model of the world: its architecture, tokenizer family and what it is trained on."""

    model_config = ConfigDict(extra="forbid")

    name: str
    arch: Literal["llama", "qwen3", "gpt_neox"]
    tokenizer: Literal["bpe", "sp"]
    vocab_size: int = 600
    hidden: int = 128
    layers: int = 2
    heads: int = 4
    intermediate: int = 384
    domains: list[str]
    light_domains: list[str] = Field(default_factory=list, description="Seen a little (light_per_domain examples each).")
    light_per_domain: int = 100
    steps: int = 400
    lr: float = 3e-3
    batch_size: int = 32


class WorldSpec(BaseModel):
    """The embedded world: a pivot weak on the sources' domains and source specialists."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(2, description="Bumped when the world's construction changes, so caches rebuild.")
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
    test_per_domain: int = 60

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(), sort_keys=True).encode()).hexdigest()[:10]


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


def world_tokenizer(spec: ModelSpec, texts: list[str], out_dir: Path | None = None):
    trainer = train_bpe_tokenizer if spec.tokenizer == "bpe" else train_sp_tokenizer
    return trainer(texts, spec.vocab_size, out_dir, chat_template=WORLD_TEMPLATE)


def encode_conversations(tok, convs) -> list:
    """Tokenized training examples (fusion.train.Example) of conversations, gold labels only."""
    from fusion.chat import encode_chat
    from fusion.train import Example

    out = []
    for c in convs:
        ids, resp, _ = encode_chat(tok, c.messages)
        out.append(Example(ids, resp))
    return out


def train_specialist(spec: ModelSpec, tok, seed: int, train_per_domain: int, out_dir: Path, progress: bool = False):
    """Initialize a model of `spec` and train it on its domains' train split; save it with its tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from fusion import domains as D
    from fusion.train import TrainConfig, train

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


def write_generation_config(path: Path, tok) -> None:
    from fusion.chat import end_token_ids

    atomic_write_text(path / "generation_config.json", json.dumps(
        {"bos_token_id": tok.bos_token_id, "eos_token_id": end_token_ids(tok), "pad_token_id": tok.pad_token_id,
         "do_sample": False}, indent=2) + "\n")


def conversations_to_jsonl(convs, path: Path) -> None:
    atomic_write_text(path, "".join(json.dumps({"qid": c.qid, "domain": c.domain, "messages": c.messages,
                                                "answers": c.answers, "noisy": c.noisy}) + "\n" for c in convs))


def load_conversations(path: Path) -> list:
    from fusion.domains import Conversation

    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FusevalError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise FusevalError(f"{path}: cannot read conversations ({e.__class__.__name__})") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise FusevalError(f"{path}:{n}: not a conversation record (invalid JSON: {e.msg})") from None
        msgs = d.get("messages") if isinstance(d, dict) else None
        if not (isinstance(msgs, list) and msgs and all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in msgs)):
            raise FusevalError(f"{path}:{n}: not a conversation record ('messages' must be a non-empty list of "
                               "{role, content} objects)")
        out.append(Conversation(d.get("domain", ""), str(d.get("qid", n)), msgs, d.get("answers", []),
                                bool(d.get("noisy", False))))
    return out


def build_world(root: str | Path, spec: WorldSpec | None = None, progress: bool = False) -> Path:
    """Build (or reuse) the world under root/world-KEY: tokenizers, pivot, sources, fusion and test data.

    Returns the world directory, which holds world.json (the spec and training summaries),
    one HF model directory per model, fusion.jsonl (the fusion training set) and test.jsonl.
    """
    from fusion import domains as D

    spec = spec or WorldSpec()
    out = Path(root) / f"world-{spec.key()}"
    if (out / "world.json").exists():
        write_fuse_recipe(out, spec)
        return out
    all_domains = sorted({d for m in [spec.pivot, *spec.sources] for d in m.domains + m.light_domains})
    texts = D.corpus(all_domains, 400, seed=spec.seed)
    with atomic_output_dir(out, force=True) as tmp:
        summaries = {}
        for i, m in enumerate([spec.pivot, *spec.sources]):
            tok = world_tokenizer(m, texts)
            summaries[m.name] = train_specialist(m, tok, spec.seed + i, spec.train_per_domain, tmp / m.name, progress)
            summaries[m.name].pop("losses")
        source_domains = {d for s in spec.sources for d in s.domains}
        fusion = [c for d in all_domains for c in D.generate(
            d, spec.fusion_per_domain, spec.seed + 1000, "train", noise=spec.fusion_noise if d in source_domains else 0.0)]
        test = [c for d in all_domains for c in D.generate(d, spec.test_per_domain, spec.seed + 2000, "test", unique=True)]
        conversations_to_jsonl(fusion, tmp / "fusion.jsonl")
        conversations_to_jsonl(test, tmp / "test.jsonl")
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

    recipe = {"pivot": spec.pivot.name, "sources": [s.name for s in spec.sources], "data": "fusion.jsonl",
              **WORLD_FUSE_RECIPE}
    path = Path(world) / "fuse.yml"
    text = "# FuseChat recipe for the tiny world: fuseval fuse fuse.yml OUT_DIR\n" + yaml.safe_dump(recipe, sort_keys=False)
    if not path.exists() or path.read_text() != text:
        atomic_write_text(path, text)
    return path


def score(model_dir: str | Path, convs, batch_size: int = 64) -> np.ndarray:
    """Exact-answer correctness [n_conversations, n_turns] of a model's greedy two-turn answers."""
    from transformers import AutoModelForCausalLM

    from fusion.chat import answer_two_turns, load_tokenizer
    from fusion.domains import check

    tok = load_tokenizer(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    answers = answer_two_turns(model, tok, [c.prompt_turns() for c in convs], batch_size=batch_size)
    return np.array([check(c, a) for c, a in zip(convs, answers)], dtype=bool)

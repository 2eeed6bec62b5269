"""The tiny local zoo: small random Hugging Face checkpoints and tokenizers, built without a hub.

    python -m fusion.zoo merge-set runs/zoo --size tiny   # base + 2 fine-tuned-like variants (fusion/zoo/__main__.py)

`merge_set` writes a base model and variants φ_k = θ + δ_k whose deltas differ per layer (each
variant "specializes" in a different depth band and is sparse in a different way), so merge
methods produce visibly different results. Checkpoints are written tensor by tensor with the
streaming writer, so the ~1B-parameter benchmark set never needs a whole model in memory.
Built sets are cached under their directory, keyed by their parameters.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from fusion.common.files import atomic_output_dir, atomic_write_text
from fusion.common.hashing import derived_seed
from fusion.io import DEFAULT_SHARD_BYTES, ShardedWriter, dtype_name, parse_dtype
from fusion.merge.params import layer_index
from fusion.zoo.tokenizers import build_tokenizer


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
    return torch.Generator().manual_seed(derived_seed(seed, name))


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

        write_checkpoint(paths[f"variant{k + 1}"], config, variant_tensor, torch_dtype, shard_bytes,
                         tokenizer_from=home)
    atomic_write_text(home / "zoo.json", json.dumps(params, indent=2) + "\n")
    return paths

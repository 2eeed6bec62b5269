"""What a Hugging Face model directory holds besides tensors, and the names of its weight files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from fusion.common.files import atomic_write_text
from fusion.io.dtypes import dtype_name

# Files copied from the source model next to the merged weights (those that exist).
MODEL_SIDE_FILES = (
    "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json",
    "chat_template.jinja", "chat_template.json",
)
INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
DEFAULT_SHARD_BYTES = 5 * 10**9


def copy_model_files(src: Path, dst: Path, out_dtype: torch.dtype | None = None) -> list[str]:
    """Copy config, tokenizer, generation config and chat template files from `src` into `dst`."""
    copied = []
    for fname in MODEL_SIDE_FILES:
        s = Path(src) / fname
        if not s.exists():
            continue
        if fname == "config.json" and out_dtype is not None:
            cfg = json.loads(s.read_text())
            key = "dtype" if "dtype" in cfg else "torch_dtype"
            cfg[key] = dtype_name(out_dtype)
            atomic_write_text(dst / fname, json.dumps(cfg, indent=2) + "\n")
        else:
            shutil.copyfile(s, dst / fname)
        copied.append(fname)
    return copied

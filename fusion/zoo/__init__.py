"""The tiny zoo, the embedded default world: everything tests and the demo need, built locally without a hub.

- `domains`: synthetic two-turn chat domains with checkable answers;
- `tokenizers`: tokenizer trainers of two families (byte-level BPE with `Ġ`, SentencePiece-style with `▁`);
- `world`: specialists of different tokenizers and architectures trained on those domains (`build_world`);
- `merge_sets`: random base + variant checkpoints for merge tests and benchmarks (`merge_set`).

    world = build_world("runs/world")                       # runs/world/world-KEY, built once per spec
    python -m fusion.zoo merge-set runs/zoo --size tiny     # base + 2 fine-tuned-like variants
"""

from fusion.zoo.merge_sets import SIZES, merge_set
from fusion.zoo.tokenizers import CHAT_TEMPLATE, train_bpe_tokenizer, train_sp_tokenizer
from fusion.zoo.world import (
    WORLD_FUSE_RECIPE,
    WORLD_TEMPLATE,
    WORLDS,
    ModelSpec,
    WorldSpec,
    build_world,
    known_effect_spec,
    model_config,
    real_teacher_spec,
    score,
    train_specialist,
    world_tokenizer,
    write_fuse_recipe,
)

__all__ = ["CHAT_TEMPLATE", "SIZES", "WORLDS", "WORLD_FUSE_RECIPE", "WORLD_TEMPLATE", "ModelSpec", "WorldSpec",
           "build_world", "known_effect_spec", "merge_set", "model_config", "real_teacher_spec", "score",
           "train_bpe_tokenizer", "train_sp_tokenizer", "train_specialist", "world_tokenizer", "write_fuse_recipe"]

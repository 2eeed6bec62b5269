"""Streaming Hugging Face checkpoint I/O: lazy per-tensor reads, planned shards written as tensors come.

    reader = CheckpointReader("models/a")          # index json or a single model.safetensors
    t = reader.get("model.layers.0.mlp.up_proj.weight")
    with reader.mapped(name) as view: ...          # zero-copy, read-only, for reading in blocks
    with atomic_output_dir("out") as tmp:
        w = ShardedWriter(tmp, [(name, shape, dtype), ...], max_shard_bytes=5 * 10**9)
        w.write(name, tensor) ...; w.finish()      # or piece by piece: w.write_block(name, block, start)
        r = w.reserve(name, start, n); r.out.copy_(x); w.commit(r)   # or computed straight into its room

The modules: `reader` (safetensors headers, `CheckpointReader`), `writer` (`ShardedWriter`, shard
planning), `stream` (the O_DIRECT staging ring a writer streams through), `dtypes` (dtype names
and codes) and `model_dir` (file names of a model directory, copying its config and tokenizer).
"""

from fusion.io.dtypes import DTYPE_CODES, DTYPE_NAMES, SAFETENSORS_DTYPES, dtype_name, parse_dtype
from fusion.io.model_dir import DEFAULT_SHARD_BYTES, INDEX_NAME, MODEL_SIDE_FILES, SINGLE_NAME, copy_model_files
from fusion.io.reader import CheckpointReader, TensorInfo, read_safetensors_header
from fusion.io.writer import Reservation, ShardedWriter, plan_shards

__all__ = [
    "DEFAULT_SHARD_BYTES",
    "DTYPE_CODES",
    "DTYPE_NAMES",
    "INDEX_NAME",
    "MODEL_SIDE_FILES",
    "SAFETENSORS_DTYPES",
    "SINGLE_NAME",
    "CheckpointReader",
    "Reservation",
    "ShardedWriter",
    "TensorInfo",
    "copy_model_files",
    "dtype_name",
    "parse_dtype",
    "plan_shards",
    "read_safetensors_header",
]

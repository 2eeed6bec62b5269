"""The world's tokenizers are a function of their training texts, whatever the process (hash seeds included)."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
import hashlib
from fusion.zoo import domains as D
from fusion.zoo.world import WorldSpec, world_tokenizer
spec = WorldSpec()
domains = sorted({d for m in [spec.pivot, *spec.sources] for d in m.domains + m.light_domains})
texts = D.corpus(domains, 400, seed=spec.seed)
print(" ".join(hashlib.sha256(world_tokenizer(m, texts).backend_tokenizer.to_str().encode()).hexdigest()
               for m in [spec.pivot, *spec.sources]))
"""


def test_tokenizers_are_the_same_in_every_process():
    # The Unigram trainer's hash maps are seeded per process: before canonicalization, its scores' last bits and the
    # order of the characters it adds at the end changed from run to run, renumbering tokens.
    outs = {subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout for seed in range(3)}
    assert len(outs) == 1, outs

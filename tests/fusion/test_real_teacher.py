"""A real teacher through the whole fusion pipeline: SmolLM2-135M-Instruct into a pivot of another real vocabulary.

The world is `zoo.real_teacher_spec()` made small (a briefly trained pivot, 24 fusion conversations per
domain, 20 training steps): SmolLM2 (49,152 tokens, ChatML with its default system prompt) from the
registry's GGUF, and a pivot with llama.cpp's Llama-2 vocabulary (32,000 tokens, Llama-2 chat format).
Checks:
1. the teacher store holds SmolLM2's own distributions: each stored top-K row equals an independent
   float64 log-softmax of one unpadded forward pass (float16 storage: rtol 1e-3);
2. the store is at most 1% of the dense float16 equivalent (positions x 49,152 x 2 bytes);
3. the two real vocabularies align: digits and most words map to same-text tokens, and on arithmetic and
   code (which the pivot never saw) min_ce takes SmolLM2's distribution for most fusion tokens;
4. stage 1, stage 2 (one target: the merge is that target) and the control come out as models of the
   pivot's shape.
The suite `benchmarks/suites/real-teacher.yml` runs the full-size world and reports fused vs control.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fusion import zoo
from fusion.distill import TeacherStore, record_key
from fusion.pipeline import load_fuse_config, run_fuse
from tests.fusion.test_assets import fetched_or_skip
from tests.fusion.test_distill import CHATML_MARKERS, dense_reference

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    fetched_or_skip()
    spec = zoo.real_teacher_spec()
    spec = spec.model_copy(update={"pivot": spec.pivot.model_copy(update={"steps": 60}), "train_per_domain": 600,
                                   "fusion_per_domain": 24, "test_per_domain": 4})
    root = tmp_path_factory.mktemp("real-teacher")
    world = zoo.build_world(root / "world", spec)
    cfg = load_fuse_config(world / "fuse.yml")
    cfg = cfg.model_copy(update={"seeds": [0], "train": cfg.train.model_copy(update={"steps": 20, "warmup": 2})})
    out = root / "fused"
    report = run_fuse(cfg, out)
    return {"world": world, "out": out, "report": report, "convs": cfg.data}


def test_stored_distributions_are_smollm2s_own(real):
    from transformers import AutoModelForCausalLM

    from fusion.chat import load_tokenizer
    from fusion.conversations import load_conversations

    model_dir = real["world"] / "smollm2"
    assert json.loads((model_dir / "config.json").read_text())["vocab_size"] == 49152
    tok = load_tokenizer(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    store = TeacherStore(real["out"] / "teachers" / "smollm2")
    convs = load_conversations(real["convs"])
    for c in [convs[0], convs[len(convs) // 2], convs[-1]]:  # one per domain
        rec = store.get(record_key(c))
        ids, lp, gold, ce, turns = dense_reference(model, tok, c.messages, store.index["top_k"], markers=CHATML_MARKERS)
        np.testing.assert_array_equal(rec.tokens, gold)
        assert rec.turns == turns
        top1 = rec.ids[:, 0] == ids[:, 0]
        assert top1.mean() >= 0.95, c.domain  # near-ties may swap in float32 vs float64
        np.testing.assert_allclose(rec.logprobs[top1, 0], lp[top1, 0], rtol=2e-3, atol=2e-3)
        assert rec.ce == pytest.approx(ce, rel=1e-3)


def test_teacher_storage_is_at_most_one_percent_of_dense(real):
    root = real["out"] / "teachers" / "smollm2"
    store = TeacherStore(root)
    positions = sum(len(store.get(q).tokens) for sh in store.index["shards"] for q in sh["qids"])
    stored = sum(p.stat().st_size for p in root.iterdir())
    share = stored / (positions * 49152 * 2)
    print(f"teacher store: {stored} bytes for {positions} positions, {100 * share:.3f}% of dense float16")
    assert share <= 0.01


def test_real_vocabularies_align_and_the_teacher_is_chosen_where_the_pivot_is_blank(real):
    stats = real["report"]["stage1"]["smollm2"]
    print(json.dumps({k: v for k, v in stats.items() if k != "examples"}, indent=1, default=str)[:3000])
    assert stats["transferred_share"] >= 0.5  # response tokens paired 1:1 with same-text source tokens (0.59)
    share = stats["teacher_token_share"]
    for d in ("arithmetic", "code"):  # the pivot never saw these
        assert share[d] >= 0.5, (d, share)
    assert share["formatting"] < share["arithmetic"], share


def test_every_stage_writes_a_model_of_the_pivots_shape(real):
    from safetensors import safe_open

    def shapes(d):
        with safe_open(str(d / "model.safetensors"), "pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}

    pivot = shapes(real["world"] / "pivot")
    assert pivot["model.embed_tokens.weight"][0] == 32000
    for name in ("target-smollm2", "merged", "control"):
        assert shapes(real["out"] / "seed-0" / name) == pivot, name
    # Stage 2 of one target: VaRM gives it all the weight, so the merge is the target.
    from safetensors.torch import load_file

    target = load_file(real["out"] / "seed-0" / "target-smollm2" / "model.safetensors")
    merged = load_file(real["out"] / "seed-0" / "merged" / "model.safetensors")
    for k, v in target.items():
        torch.testing.assert_close(merged[k], v, rtol=0, atol=1e-6)

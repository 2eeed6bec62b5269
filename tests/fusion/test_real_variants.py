"""Domain variants of a real model train only their top blocks (fusion/zoo/real_variants.py)."""

from __future__ import annotations

import torch

from fusion.conversations import encode_conversations
from fusion.train import TrainConfig, train
from fusion.zoo import domains as D
from fusion.zoo.real_variants import RealVariantsSpec, trainable_top


def _tiny_llama(tok):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                      num_key_value_heads=2, intermediate_size=64, tie_word_embeddings=True,
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    return LlamaForCausalLM(cfg)


def test_only_the_top_blocks_and_the_final_norm_change():
    from fusion import zoo

    tok = zoo.train_bpe_tokenizer(D.corpus(["code"], 30), 300, chat_template=zoo.WORLD_TEMPLATE)
    model = _tiny_llama(tok)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    n = trainable_top(model, 1)
    top = model.model.layers[3]
    assert n == sum(p.numel() for p in top.parameters()) + model.model.norm.weight.numel()
    train(model, encode_conversations(tok, D.generate("code", 16, 0, "train")),
          TrainConfig(steps=3, batch_size=4, lr=1e-2, lam=1.0, warmup=0), pad_id=tok.pad_token_id)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("model.layers.3.", "model.norm.")) for k in changed), changed
    assert torch.equal(before["model.embed_tokens.weight"], after["model.embed_tokens.weight"])  # tied: head too


def test_the_spec_key_changes_with_what_is_trained():
    a, b = RealVariantsSpec(), RealVariantsSpec(steps=121)
    assert a.key() != b.key() and a.key() == RealVariantsSpec().key()

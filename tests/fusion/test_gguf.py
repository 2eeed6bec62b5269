"""`fuseval import-gguf` on the real SmolLM2-135M-Instruct GGUF, and the bad GGUFs it must refuse in one line.

    pytest tests/fusion/test_gguf.py

The real model comes from `fusion.assets` (imported there with import_gguf, bf16; see test_assets.py for
the cache); the bad inputs are tiny GGUFs written here with the `gguf` package's writer.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from fusion.common.errors import FusevalError
from fusion.gguf import check_supported, end_token_ids, import_gguf, read_header
from tests.fusion.test_assets import fetched_or_skip

SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


@pytest.fixture(scope="module")
def smollm2() -> tuple[Path, Path]:
    """(the GGUF, its import: a bf16 safetensors directory)."""
    report = fetched_or_skip()
    return report.gguf, report.model_dir


def _tiny_gguf(path: Path, arch: str = "llama", raw_type=None) -> Path:
    """A GGUF of one float tensor, and one raw tensor of ggml type `raw_type` (bytes of zeros) if given."""
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((8, 32), np.float32))
    if raw_type is not None:
        block, size = gguf.GGML_QUANT_SIZES[raw_type]
        w.add_tensor("blk.0.attn_q.weight", np.zeros((4, 64 // block * size), np.uint8), raw_dtype=raw_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _bad_inputs(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, what its one-line error must say after the file name)."""
    from gguf import GGMLQuantizationType as Q

    text = tmp / "notes.gguf"
    text.write_text("this is not a model\n")
    empty = tmp / "empty.gguf"
    empty.write_bytes(b"")
    good = _tiny_gguf(tmp / "good.gguf").read_bytes()
    cut_data, cut_header = tmp / "cut-data.gguf", tmp / "cut-header.gguf"
    cut_data.write_bytes(good[:-100])
    cut_header.write_bytes(good[:40])
    return {
        "not gguf": (text, "not a GGUF file"),
        "empty": (empty, "not a GGUF file (it is empty)"),
        "truncated data": (cut_data, "truncated: its tensors need"),
        "truncated header": (cut_header, "truncated or corrupt GGUF header"),
        "architecture": (_tiny_gguf(tmp / "rwkv.gguf", arch="rwkv7"),
                         "architecture 'rwkv7' is not supported by transformers' GGUF loader"),
        "quantization": (_tiny_gguf(tmp / "q8_1.gguf", raw_type=Q.Q8_1),
                         "quantization Q8_1 (e.g. tensor blk.0.attn_q.weight) cannot be dequantized"),
    }


def test_bad_ggufs_are_one_line_errors_naming_the_file(tmp_path):
    for name, (path, says) in _bad_inputs(tmp_path).items():
        with pytest.raises(FusevalError) as e:
            import_gguf(path, tmp_path / f"out-{name}")
        message = str(e.value)
        assert "\n" not in message and message.startswith(f"{path}: {says}"), (name, message)
        assert not (tmp_path / f"out-{name}").exists()
    with pytest.raises(FusevalError, match="no such file"):
        read_header(tmp_path / "missing.gguf")


def test_bad_ggufs_through_the_cli(tmp_path):
    cases = _bad_inputs(tmp_path)

    def run(name: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "harness.cli", "import-gguf", str(cases[name][0]),
                               str(tmp_path / f"out-{name}")], capture_output=True, text=True, timeout=300)

    with ThreadPoolExecutor(3) as pool:
        results = dict(zip(cases, pool.map(run, cases)))
    for name, out in results.items():
        path, says = cases[name]
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 1 and len(lines) == 1, (name, out.stderr)
        assert lines[0].startswith(f"error: {path}: {says}"), (name, lines)
        assert not (tmp_path / f"out-{name}").exists()


def test_an_existing_output_is_refused_before_loading(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(FusevalError, match="output directory exists; pass --force"):
        import_gguf(_tiny_gguf(tmp_path / "x.gguf"), tmp_path / "out")


def test_a_truncated_download_of_the_real_file(smollm2, tmp_path):
    gguf, _ = smollm2
    cut = tmp_path / "SmolLM2-half.gguf"
    with open(gguf, "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(gguf.stat().st_size // 2))
    with pytest.raises(FusevalError, match=rf"^{cut}: truncated: its tensors need {gguf.stat().st_size} bytes"):
        check_supported(read_header(cut))


def test_a_vocabulary_only_gguf_has_no_model_to_import(smollm2, tmp_path):
    from fusion import assets

    vocab = assets.vocab_gguf("qwen2")
    with pytest.raises(FusevalError, match="holds no tensors"):
        import_gguf(vocab, tmp_path / "out")
    # its end tokens: <|endoftext|> (eos) and <|im_end|>, not the vocabulary's plain-text "</s>"
    assert end_token_ids(read_header(vocab)) == [151643, 151645]


@pytest.mark.slow
def test_weights_equal_transformers_own_dequantized_load(smollm2):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    gguf, model_dir = smollm2
    ref = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).state_dict()
    worst = 0.0
    with safe_open(model_dir / "model.safetensors", "pt") as f:
        assert set(f.keys()) == set(ref) - {"lm_head.weight"}  # the tied output embedding is written once
        for name in f.keys():
            ours = f.get_tensor(name)
            assert ours.dtype == torch.bfloat16
            # bf16 rounding of transformers' float32 dequantization, bit for bit; and so within half a bf16 ulp
            assert torch.equal(ours, ref[name].to(torch.bfloat16)), name
            diff = (ours.float() - ref[name]).abs()
            assert torch.all(diff <= ref[name].abs() * 2.0**-8), name
            worst = max(worst, diff.max().item())
    assert 0 < worst < 0.02, worst  # 0.0137 measured: weights up to ~3.5 in size


def test_side_files_config_and_recipe(smollm2):
    gguf, model_dir = smollm2
    header = read_header(gguf)
    cfg = json.loads((model_dir / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["tie_word_embeddings"] is True
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["dtype"] == "bfloat16" and cfg["vocab_size"] == 49152
    gen = json.loads((model_dir / "generation_config.json").read_text())
    assert gen["eos_token_id"] == [2, 0] and gen["bos_token_id"] == 1  # <|im_end|>, then <|endoftext|>
    tok_cfg = json.loads((model_dir / "tokenizer_config.json").read_text())
    assert tok_cfg["chat_template"] == header.metadata["tokenizer.chat_template"]
    assert SYSTEM_PROMPT in tok_cfg["chat_template"]
    recipe = yaml.safe_load((model_dir / "fuseval_recipe.yml").read_text())
    assert recipe["source"]["sha256"] == hashlib.sha256(gguf.read_bytes()).hexdigest()
    assert recipe["source"]["tensor_types"] == {"Q4_1": 210, "F32": 61, "Q8_0": 1}
    assert set(recipe["versions"]) == {"fuseval", "transformers", "gguf", "torch"}
    assert recipe["resolved"]["parameters"] == 134_515_008
    assert recipe["resolved"]["tied"] == {"lm_head.weight": "model.embed_tokens.weight"}
    assert [t["token"] for t in recipe["resolved"]["end_tokens"]] == ["<|im_end|>", "<|endoftext|>"]


@pytest.mark.slow
def test_the_imported_model_is_tied_and_answers_greedily(smollm2):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf, model_dir = smollm2
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    tok = AutoTokenizer.from_pretrained(model_dir)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt.startswith(f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n")  # the GGUF's default system prompt
    from_gguf = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    assert tok(prompt)["input_ids"] == from_gguf(prompt)["input_ids"]
    ids = tok(prompt, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=10, do_sample=False)
    answer = tok.decode(out[0, ids["input_ids"].shape[1]:])
    assert "Paris" in answer, answer
    assert answer.endswith("<|im_end|>"), answer  # generation stopped at the chat turn's end token

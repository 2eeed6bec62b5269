"""Bad input through the real CLI: each case exits non-zero with one `error:` line naming the file and the problem.

    pytest tests/test_bad_input.py

Text cases are files in tests/data/bad/; binary ones (safetensors checkpoints) are written into tmp_path
by the helpers below. Every command runs in an empty working directory with its outputs pointed into it,
so "nothing half-written" is checked as "the working directory is still empty afterwards".
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

BAD = Path(__file__).parent / "data" / "bad"


def fuseval(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def _write_yaml(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# ---- tiny safetensors checkpoints: three Llama-named tensors, a few hundred bytes

def _tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"model.embed_tokens.weight": torch.randn(8, 4, generator=g),
            "model.layers.0.self_attn.q_proj.weight": torch.randn(4, 4, generator=g),
            "lm_head.weight": torch.randn(8, 4, generator=g)}


def _model_dir(path: Path, tensors: dict[str, torch.Tensor] | None = None, raw: bytes | None = None) -> Path:
    """A model directory: config.json and model.safetensors (from tensors, or raw bytes as they are)."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
                                                  "num_hidden_layers": 1}))
    if raw is not None:
        (path / "model.safetensors").write_bytes(raw)
    else:
        save_file(tensors if tensors is not None else _tensors(), path / "model.safetensors")
    return path


def _safetensors_bytes(header: bytes, data: bytes = b"") -> bytes:
    """A safetensors file: 8-byte little-endian header length, the header, the data."""
    return struct.pack("<Q", len(header)) + header + data


def _header(entries: dict) -> bytes:
    return json.dumps(entries).encode()


def _linear(inp: Path, *models: Path) -> Path:
    return _write_yaml(inp / "merge.yml", {"merge_method": "linear",
                                          "models": [{"model": str(m), "parameters": {"weight": 1.0}} for m in models]})


def _merge_with(inp: Path, bad: Path) -> tuple[list, list[str]]:
    """`fuseval merge` of a good model and `bad`; the error must name bad's model.safetensors."""
    good = _model_dir(inp / "good")
    return ["merge", _linear(inp, good, bad), "out"], [str(bad / "model.safetensors")]


# ---- the cases: each builds its inputs under `inp` and returns (CLI arguments, fragments of the error line)

def merge_yaml_malformed(inp):
    return ["merge", BAD / "merge_malformed.yml", "out"], ["merge_malformed.yml", "malformed YAML at line 5"]


def merge_yaml_truncated(inp):
    return ["merge", BAD / "merge_truncated.yml", "out"], ["merge_truncated.yml", "missing required key 'models'"]


def merge_yaml_duplicate_key(inp):
    return (["merge", BAD / "merge_duplicate_key.yml", "out"],
            ["merge_duplicate_key.yml", "line 8", "key 'merge_method' appears twice in one mapping (first at line 1)"])


def merge_yaml_not_utf8(inp):
    cfg = inp / "latin1.yml"
    cfg.write_bytes("merge_method: linear\nmodels:\n  - model: mod\xe8le\n".encode("latin-1"))
    return ["merge", cfg, "out"], ["latin1.yml", "not UTF-8"]


def safetensors_truncated_header(inp):
    whole = _safetensors_bytes(_header({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}), bytes(8))
    args, frags = _merge_with(inp, _model_dir(inp / "bad", raw=whole[:30]))  # cut inside the header
    return args, frags + ["truncated"]


def safetensors_header_bad_json(inp):
    bad = _model_dir(inp / "bad", raw=_safetensors_bytes(b'{"w": {"dtype": "F32", "shape": [2],, }', bytes(8)))
    args, frags = _merge_with(inp, bad)
    return args, frags + ["corrupt safetensors header", "invalid JSON"]


def safetensors_header_not_object(inp):
    bad = _model_dir(inp / "bad", raw=_safetensors_bytes(b"[1, 2, 3]", bytes(8)))
    args, frags = _merge_with(inp, bad)
    return args, frags + ["header is not a JSON object"]


def safetensors_data_beyond_file(inp):
    header = _header({"model.embed_tokens.weight": {"dtype": "F32", "shape": [8, 4], "data_offsets": [0, 128]}})
    bad = _model_dir(inp / "bad", raw=_safetensors_bytes(header, bytes(16)))  # claims 128 bytes, has 16
    args, frags = _merge_with(inp, bad)
    return args, frags + ["'model.embed_tokens.weight'", "outside the file"]


def safetensors_unknown_dtype(inp):
    header = _header({"model.embed_tokens.weight": {"dtype": "Q4_K", "shape": [8, 4], "data_offsets": [0, 16]}})
    bad = _model_dir(inp / "bad", raw=_safetensors_bytes(header, bytes(16)))
    args, frags = _merge_with(inp, bad)
    return args, frags + ["'model.embed_tokens.weight'", "unsupported dtype 'Q4_K'"]


def safetensors_int_where_float(inp):
    t = _tensors()
    t["model.layers.0.self_attn.q_proj.weight"] = torch.arange(16, dtype=torch.int32).reshape(4, 4)
    bad = _model_dir(inp / "bad", t)
    good = _model_dir(inp / "good")
    return ["merge", _linear(inp, good, bad), "out"], [str(bad), "'model.layers.0.self_attn.q_proj.weight'",
                                                       "int32", "float32"]


def safetensors_nan_inf(inp):
    t = _tensors()
    t["lm_head.weight"][0, 0] = float("nan")
    t["lm_head.weight"][1, 1] = float("inf")
    bad = _model_dir(inp / "bad", t)
    return ["merge", _linear(inp, _model_dir(inp / "good"), bad), "out"], [str(bad), "'lm_head.weight'", "NaN or Inf"]


def safetensors_huge_overflows_out_dtype(inp):
    t = _tensors()
    t["lm_head.weight"] *= 1e6  # finite in float32, beyond float16's ±65504
    bad = _model_dir(inp / "bad", t)
    good = _model_dir(inp / "good")
    return (["merge", _linear(inp, good, bad), "out", "--dtype", "float16"],
            ["merge.yml", "'lm_head.weight'", "float16"])


def safetensors_huge_overflows_compute(inp):
    big = {k: torch.full_like(v, 3e38) for k, v in _tensors().items()}  # finite, but their sum is not
    a, b = _model_dir(inp / "a", big), _model_dir(inp / "b", big)
    return ["merge", _linear(inp, a, b), "out"], ["merge.yml", "merge result (linear) for tensor", "NaN or Inf"]


def safetensors_shape_mismatch(inp):
    t = _tensors()
    t["model.layers.0.self_attn.q_proj.weight"] = torch.zeros(4, 2)
    bad = _model_dir(inp / "bad", t)
    good = _model_dir(inp / "good")
    return ["merge", _linear(inp, good, bad), "out"], [str(bad), "'model.layers.0.self_attn.q_proj.weight'",
                                                       "shape (4, 2)"]


def fuse_yaml_malformed(inp):
    return ["fuse", BAD / "fuse_malformed.yml", "fused"], ["fuse_malformed.yml", "malformed YAML at line 4"]


def fuse_yaml_truncated(inp):
    return ["fuse", BAD / "fuse_truncated.yml", "fused"], ["fuse_truncated.yml", "malformed YAML"]


def _fuse_on(inp: Path, data: str) -> Path:
    pivot, source = _model_dir(inp / "pivot"), _model_dir(inp / "source")
    return _write_yaml(inp / "fuse.yml", {"pivot": str(pivot), "sources": [str(source)], "data": str(BAD / data)})


def fuse_conversations_truncated(inp):
    return ["fuse", _fuse_on(inp, "conversations_truncated.jsonl"), "fused"], ["conversations_truncated.jsonl:2",
                                                                              "not a conversation record"]


def fuse_conversations_messages_not_list(inp):
    return (["fuse", _fuse_on(inp, "conversations_messages_not_list.jsonl"), "fused"],
            ["conversations_messages_not_list.jsonl:1", "'messages'", "list"])


def _run(suite: str):
    return ["run", BAD / suite, "--workspace", "ws", "--store", "fuseval.db"]


def suite_yaml_malformed(inp):
    return _run("suite_malformed.yml"), ["suite_malformed.yml", "malformed YAML at line 3"]


def suite_yaml_truncated(inp):
    return _run("suite_truncated.yml"), ["suite_truncated.yml", "malformed YAML"]


def suite_name_path_traversal(inp):
    return _run("suite_traversal.yml"), ["suite_traversal.yml", "candidates.0.name", "'../../x' is not a usable name"]


def suite_grid_name_path_traversal(inp):
    return _run("suite_traversal_grid.yml"), ["suite_traversal_grid.yml", "grid[0]", "'../../x' is not a usable name"]


def _generate(questions: Path, model: Path | None = None):
    return ["generate", model or "no-model-needed", "--bench", questions, "--out", "answers.jsonl",
            "--backend", "transformers"]


def questions_malformed(inp):
    return _generate(BAD / "questions_malformed.jsonl"), ["questions_malformed.jsonl:2", "not valid JSON"]


def questions_truncated(inp):  # a question file is never appended to: a cut last line is an error
    return _generate(BAD / "questions_truncated.jsonl"), ["questions_truncated.jsonl:2", "not valid JSON"]


def questions_turns_not_list(inp):
    return _generate(BAD / "questions_turns_not_list.jsonl"), ["questions_turns_not_list.jsonl:1", "'turns'",
                                                                "valid list"]


def questions_id_dict(inp):
    return (["eval", "no-model-needed", "--bench", BAD / "questions_id_dict.jsonl", "--store", "fuseval.db",
             "--backend", "transformers"], ["questions_id_dict.jsonl:1", "'question_id'", "not dict"])


def _tokenizer_model(inp: Path, tokenizer_file: str) -> Path:
    model = _model_dir(inp / "model")
    (model / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast"}))
    shutil.copyfile(BAD / tokenizer_file, model / "tokenizer.json")
    return model


def tokenizer_json_garbage(inp):  # JSON, but not a tokenizer: transformers itself fails with a KeyError
    model = _tokenizer_model(inp, "tokenizer_garbage.json")
    return _generate(BAD / "fastchat_question.jsonl", model), [str(model / "tokenizer.json"), "not a valid tokenizer"]


def _fastchat(inp: Path, questions: str = "fastchat_question.jsonl", files: dict[str, str] | None = None) -> list:
    """`fuseval import-fastchat` of a bench directory: question.jsonl and {path in the bench: corpus file}."""
    bench = inp / "data" / "mini"
    bench.mkdir(parents=True)
    shutil.copyfile(BAD / questions, bench / "question.jsonl")
    for where, src in (files or {}).items():
        (bench / where).parent.mkdir(exist_ok=True)
        shutil.copyfile(BAD / src, bench / where)
    return ["import-fastchat", inp / "data", "--store", "fuseval.db"]


def fastchat_questions_malformed(inp):
    return _fastchat(inp, "questions_malformed.jsonl"), ["mini/question.jsonl:2", "not valid JSON"]


def fastchat_answers_truncated_midfile(inp):  # a cut *last* line is dropped (a crash mid-append); not one inside
    return (_fastchat(inp, files={"model_answer/m.jsonl": "answers_truncated.jsonl"}),
            ["model_answer/m.jsonl:1", "not valid JSON"])


def fastchat_answers_choices_not_list(inp):
    return (_fastchat(inp, files={"model_answer/m.jsonl": "answers_choices_not_list.jsonl"}),
            ["model_answer/m.jsonl:1", "'choices'", "valid list"])


def fastchat_judgment_score_text(inp):
    return (_fastchat(inp, files={"model_judgment/gpt-4_single.jsonl": "judgment_score_text.jsonl"}),
            ["gpt-4_single.jsonl:1", "'score", "valid integer"])


CASES: dict[str, Callable[[Path], tuple[list, list[str]]]] = {f.__name__: f for f in [
    merge_yaml_malformed, merge_yaml_truncated, merge_yaml_duplicate_key, merge_yaml_not_utf8,
    safetensors_truncated_header, safetensors_header_bad_json, safetensors_header_not_object,
    safetensors_data_beyond_file, safetensors_unknown_dtype, safetensors_int_where_float, safetensors_nan_inf,
    safetensors_huge_overflows_out_dtype, safetensors_huge_overflows_compute, safetensors_shape_mismatch,
    fuse_yaml_malformed, fuse_yaml_truncated, fuse_conversations_truncated, fuse_conversations_messages_not_list,
    suite_yaml_malformed, suite_yaml_truncated, suite_name_path_traversal, suite_grid_name_path_traversal,
    questions_malformed, questions_truncated, questions_turns_not_list, questions_id_dict,
    tokenizer_json_garbage,
    fastchat_questions_malformed, fastchat_answers_truncated_midfile, fastchat_answers_choices_not_list,
    fastchat_judgment_score_text,
]}


def _error_line(r: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode != 0, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    return lines[0]


@pytest.fixture(scope="module")
def outcomes(request, tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, list[str], Path]]:
    """The selected cases' (result, fragments, working directory), run two at a time.

    Each case is a fresh interpreter that spends most of its ~2.5 s importing torch; one after another,
    the file would take about twice as long.
    """
    selected = [item.callspec.params["case"] for item in request.session.items
                if item.module is request.module and item.originalname == "test_bad_input_is_one_line_naming_the_file"]

    roots = {case: tmp_path_factory.mktemp(case) for case in selected}  # in this thread: mktemp is not thread-safe

    def run(case: str):
        inp, work = roots[case] / "in", roots[case] / "work"
        inp.mkdir()
        work.mkdir()
        args, fragments = CASES[case](inp)
        return fuseval(*args, cwd=work), fragments, work

    with ThreadPoolExecutor(2) as pool:
        return dict(zip(selected, pool.map(run, selected)))


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_naming_the_file(case, outcomes):
    result, fragments, work = outcomes[case]
    line = _error_line(result)
    for f in fragments:
        assert f in line, (f, line)
    assert not list(work.iterdir()), f"left behind: {sorted(p.name for p in work.iterdir())}"


def test_debug_shows_the_traceback(tmp_path):
    r = fuseval("--debug", "merge", BAD / "merge_malformed.yml", "out", cwd=tmp_path)
    assert r.returncode != 0 and "Traceback" in r.stderr and "malformed YAML" in r.stderr
    assert not (tmp_path / "out").exists()

"""The real model through the harness: SmolLM2-135M-Instruct (registry assets) merged, served, judged, lm-eval'd.

A small real-cpu suite (`benchmarks/suites/real-cpu.yml` is the full one): SmolLM2 and a linear merge of it
with a SmolLM2 whose top block is perturbed, 2 zoo questions (programmatic), 1 general question judged
by SmolLM2 itself (twice, at temperature 0.7, plus the order check), and the fuseval_zoo lm-eval task
on 4 documents, all through `fuseval run` on the transformers backend; then the same zoo answers
greedily from vLLM's CPU build, where it is installed, in float32 on both sides.
"""

from __future__ import annotations

import importlib.util
import json
import sqlite3

import pytest
import yaml

from tests.fusion.test_assets import fetched_or_skip
from tests.harness.test_cli_generate import fuseval

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    import torch
    from safetensors.torch import load_file, save_file

    from fusion import assets

    fetched_or_skip()
    base = assets.smollm2_dir()
    root = tmp_path_factory.mktemp("real-model")
    variant = root / "variant"
    variant.mkdir()
    for f in base.iterdir():
        if f.suffix != ".safetensors":
            (variant / f.name).write_bytes(f.read_bytes())
    torch.manual_seed(0)
    for shard in base.glob("*.safetensors"):
        tensors = load_file(shard)
        for k, v in tensors.items():
            if k.startswith("model.layers.29."):
                tensors[k] = (v.float() + 0.01 * torch.randn_like(v.float())).to(v.dtype)
        save_file(tensors, variant / shard.name, metadata={"format": "pt"})
    suite = {
        "name": "real-mini",
        "baselines": [{"name": "smollm2", "model": str(base)}],
        "candidates": [{"name": "linear", "merge": {
            "merge_method": "linear", "dtype": "bfloat16",
            "models": [{"model": str(base), "parameters": {"weight": 0.5}},
                       {"model": str(variant), "parameters": {"weight": 0.5}}]}}],
        "benchmarks": [{"questions": "zoo", "limit": 2}, {"questions": "general", "limit": 1, "judge": "llm"},
                       {"lmeval": ["fuseval_zoo"], "limit": 4}],
        "backend": {"kind": "transformers"},
        "judge": {"model": str(base), "backend": "transformers", "name": "smollm2-judge", "repeats": 2,
                  "temperature": 0.7, "max_new_tokens": 48, "order_check": 1},
        "generation": {"max_new_tokens": 24},
        "gate": {"baseline": "smollm2", "margin": 0.05},
    }
    path = root / "suite.yml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    db, ws = root / "runs.db", root / "ws"
    r = fuseval("run", path, "--workspace", ws, "--store", db)
    assert r.returncode == 0, r.stderr[-3000:]
    return {"base": base, "db": db, "ws": ws, "root": root, "stdout": r.stdout}


def _rows(db, sql):
    with sqlite3.connect(db) as con:
        return con.execute(sql).fetchall()


def test_the_merge_is_built_and_both_models_answer(real):
    (merged,) = list((real["ws"] / "models").iterdir())
    cfg = json.loads((merged / "config.json").read_text())
    assert cfg["vocab_size"] == 49152 and cfg["tie_word_embeddings"] is True
    per_model = dict(_rows(real["db"], "SELECT m.name, count(*) FROM answers a JOIN models m ON a.model_hash=m.hash "
                                       "GROUP BY m.name"))
    assert per_model == {"smollm2": 3, "linear": 3}  # 2 zoo + 1 general question each


def test_the_real_judge_path_stores_single_and_pairwise_verdicts(real):
    kinds = dict(_rows(real["db"], "SELECT kind, count(*) FROM judgments WHERE judge LIKE 'llm/%' GROUP BY kind"))
    assert kinds["single"] == 2 * 2 * 2  # 2 models x 2 turns x 2 repeats
    assert kinds["pair"] == 2  # the order check: linear vs smollm2 on 1 question, 2 turns
    report = next((real["ws"] / "reports").iterdir()) / "report.md"
    assert "| judges |" in report.read_text()


def test_lm_eval_ran_on_the_real_models(real):
    rows = _rows(real["db"], "SELECT m.name, x.task, x.metric FROM metrics x JOIN models m ON x.model_hash=m.hash")
    done = {(n, t.split("@")[0], m) for n, t, m in rows}  # tasks are keyed task@settings
    assert done >= {(n, "fuseval_zoo", "acc") for n in ("smollm2", "linear")}


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                    reason="vLLM is not installed (pip install 'fuseval[vllm]'; make test installs it)")
def test_vllm_and_transformers_answer_the_real_model_alike(real):
    from harness.formats.questions import load_answers

    outs = {}
    for kind in ("transformers", "vllm"):
        outs[kind] = real["root"] / f"{kind}.jsonl"
        r = fuseval("generate", real["base"], "--bench", "zoo", "--backend", kind, "--out", outs[kind], "--limit",
                    "2", "--max-new-tokens", "24", "--temperature", "0", "-o", "dtype=float32",
                    "--log-dir", real["root"] / "logs")
        assert r.returncode == 0, r.stderr[-3000:]
    turns = {k: [t for a in sorted(load_answers(p), key=lambda a: a.question_id) for t in a.choices[0].turns]
             for k, p in outs.items()}
    assert len(turns["vllm"]) == 4 and all(turns["vllm"])
    same = sum(a == b for a, b in zip(turns["transformers"], turns["vllm"]))
    assert same >= 3, turns  # float32 greedy on both: 159 of 160 turns agreed in benchmarks/perf/serve_real.py

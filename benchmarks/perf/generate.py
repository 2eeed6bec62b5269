"""Generation benchmark: the harness's generation path vs a direct OpenAI client on one vLLM server.

    .venv/bin/python benchmarks/perf/generate.py            # 200 two-turn zoo questions, 64 new tokens, 16 in flight
    .venv/bin/python benchmarks/perf/generate.py --quick    # 40 questions, 32 new tokens, 1 repeat (smoke test)
    .venv/bin/python benchmarks/perf/generate.py --model DIR --questions 400 --concurrency 32 --direct httpx

DESIGN.md section 7: "Harness generation throughput at least 90% of a direct client on the same
vLLM server." One server (harness.backends.vllm_server.VLLMBackend, float32, prefix caching off so
that every run does the same prefill work) serves the model: by default the tiny world's pivot,
built once with fusion.zoo.build_world under runs/world (~3 min if not there yet).

1. ours: harness.run.generate.generate_answers(backend, questions, <temp>/ours-N.jsonl, settings,
   chunk_size) exactly as `fuseval generate` calls it: each chunk's turn-1 requests at once, then
   its turn-2 requests (holding the model's turn-1 answers), answers written to a FastChat file.
2. direct: what a user would write by hand: one async client and an asyncio.Semaphore(concurrency),
   issuing every turn-1 request, then every turn-2 request. Two clients by default, each its own
   target row: `openai` (openai.AsyncOpenAI, the usual choice) and `httpx` (a plain
   httpx.AsyncClient posting JSON: the least client work, so the stricter baseline). The requests
   are the same ones: rebuilt from the questions and our answer file (turn 1: [user1]; turn 2:
   [user1, our answer1, user2]) with the same model name, temperature, top_p, max_tokens,
   per-request seed and the extra fields our client sends (stop_token_ids, skip_special_tokens).
   Before timing, a warm-up runs a few questions through both sides and checks that the rebuilt
   bodies equal the ones our client sent.

The sides alternate for --repeats (ours first on even repeats); the best throughput of each side
is compared. Throughput = completion tokens / wall time (and requests / wall time); ours is timed
around the whole generate_answers call (file writes included), direct around its two phases. Both
sides must generate the same number of completion tokens (temperature 0 by default: greedy, so
identical answers); a warning is printed if not. Each run also shows the CPU seconds spent by
this process (the client: it shares the cores with the server), by the server's processes, and by
everything else on the machine (a warning when other work took more than a quarter of a core).

Target: harness / direct completion tokens per second >= 0.9 (one row per direct client). With
--quick the workload is too short to judge, so the target is reported but not judged. Results
also go to benchmarks/perf/.cache/generate_results.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

sys.path.insert(0, str(C.REPO))
from harness.backends.vllm_server import VLLMBackend, VLLMOptions, vllm_available  # noqa: E402
from harness.formats.questions import Question, load_answers, load_questions, resolve_bench  # noqa: E402
from harness.formats.zoo import zoo_questions
from harness.run.generate import GenerationSettings, generate_answers, sample_seed  # noqa: E402

TARGET = 0.9
DIRECT_KINDS = ("openai", "httpx")
WARMUP_QUESTIONS = 8
# Body fields the openai client takes as keyword arguments; everything else goes in extra_body.
OPENAI_KWARGS = ("model", "messages", "temperature", "top_p", "max_tokens", "seed")


def make_questions(n: int, bench: str | None, seed: int) -> list[Question]:
    """n questions: from a question file, or the zoo's domains interleaved (one of each in turn)."""
    if bench:
        qs = load_questions(resolve_bench(bench))
        if len(qs) < n:
            print(f"note: {bench} has {len(qs)} questions, fewer than --questions {n}", flush=True)
        return qs[:n]
    per = -(-n // 5) + 1
    while len(qs := zoo_questions(per_domain=per, seed=seed)) < n and per < 10 * n:
        per *= 2  # a domain with few distinct test questions runs out: ask the others for more
    qs.sort(key=lambda q: (q.question_id % 1000, q.question_id // 1000))  # ids are 1000 * domain + k
    return qs[:n]


def rebuild_phases(questions: list[Question], answers_path: Path, settings: GenerationSettings, model: str,
                   extra_body: dict) -> list[list[dict]]:
    """The request bodies our client sent, rebuilt from the questions and our answer file, by turn."""
    answers = {a.question_id: a.choices[0].turns for a in load_answers(answers_path)}
    if missing := [q.question_id for q in questions if q.question_id not in answers]:
        raise SystemExit(f"our answer file {answers_path} lacks questions {missing[:5]} (failed requests?)")
    phases: list[list[dict]] = [[] for _ in range(max(len(q.turns) for q in questions))]
    for q in questions:
        messages: list[dict] = []
        for turn, user in enumerate(q.turns):
            messages = messages + [{"role": "user", "content": user}]
            phases[turn].append({"model": model, "messages": messages,
                                 "temperature": settings.temperature_for(q.category), "top_p": settings.top_p,
                                 "max_tokens": settings.max_new_tokens, **extra_body,
                                 "seed": sample_seed(settings.seed, q.question_id, 0, turn)})
            messages = messages + [{"role": "assistant", "content": answers[q.question_id][turn]}]
    return phases


class Direct:
    """A hand-written async client: one client, a semaphore, asyncio.gather per turn."""

    def __init__(self, kind: str, base_url: str, concurrency: int, timeout_s: float):
        self.kind, self.concurrency = kind, concurrency
        self.loop = asyncio.new_event_loop()  # one loop for the client's whole life (its connections stay open)
        if kind == "openai":
            import openai  # noqa: PLC0415

            self.client = openai.AsyncOpenAI(base_url=base_url, api_key="unused", timeout=timeout_s, max_retries=0)
        else:
            import httpx  # noqa: PLC0415

            self.client = httpx.AsyncClient(base_url=base_url.rstrip("/") + "/", timeout=timeout_s,
                                            limits=httpx.Limits(max_connections=concurrency,
                                                                max_keepalive_connections=concurrency))

    async def _one(self, sem: asyncio.Semaphore, body: dict) -> tuple[str, int]:
        async with sem:
            if self.kind == "openai":
                kw = {k: body[k] for k in OPENAI_KWARGS if k in body}
                r = await self.client.chat.completions.create(
                    **kw, extra_body={k: v for k, v in body.items() if k not in OPENAI_KWARGS})
                return r.choices[0].message.content, r.usage.completion_tokens
            resp = await self.client.post("chat/completions", json=body)
            resp.raise_for_status()
            data = resp.json()
            return data["choices"][0]["message"]["content"], data["usage"]["completion_tokens"]

    async def _run(self, phases: list[list[dict]]) -> list[list[tuple[str, int]]]:
        sem = asyncio.Semaphore(self.concurrency)
        return [await asyncio.gather(*(self._one(sem, b) for b in phase)) for phase in phases]

    def run(self, phases: list[list[dict]]) -> list[list[tuple[str, int]]]:
        return self.loop.run_until_complete(self._run(phases))

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close() if self.kind == "openai" else self.client.aclose())
        self.loop.close()


def run_ours(backend: VLLMBackend, questions: list[Question], out: Path, settings: GenerationSettings,
             chunk_size: int) -> dict:
    start = time.perf_counter()
    rep = generate_answers(backend, questions, out, settings, chunk_size=chunk_size)
    wall = time.perf_counter() - start
    if rep.failed:
        raise SystemExit(f"our path: {rep.failed} questions failed; see {rep.failures_path}")
    return {"wall_s": wall, "requests": rep.requests, "completion_tokens": rep.completion_tokens}


def run_direct(direct: Direct, phases: list[list[dict]]) -> tuple[dict, list[list[str]]]:
    start = time.perf_counter()
    results = direct.run(phases)
    wall = time.perf_counter() - start
    return ({"wall_s": wall, "requests": sum(len(p) for p in results),
             "completion_tokens": sum(n for p in results for _, n in p)},
            [[(t or "").strip() for t, _ in p] for p in results])


def our_texts(questions: list[Question], answers_path: Path) -> list[list[str]]:
    """Our answers in the direct client's phase order (turn by turn, questions in order)."""
    answers = {a.question_id: a.choices[0].turns for a in load_answers(answers_path)}
    return [[answers[q.question_id][t] for q in questions if t < len(q.turns)]
            for t in range(max(len(q.turns) for q in questions))]


def rates(run: dict) -> dict:
    wall = run["wall_s"]
    return {**run, "tokens_per_s": run["completion_tokens"] / wall, "requests_per_s": run["requests"] / wall}


def cpu_seconds(server_sid: int) -> tuple[float, float, float]:
    """CPU seconds so far of (this process, the server's session: API server and engine, the whole machine).

    The machine-wide figure lets a run show how much CPU other work took meanwhile (the benchmark
    shares the cores with whatever else runs, and the client competes with the server for them).
    """
    tick = os.sysconf("SC_CLK_TCK")
    server = 0
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    rest = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(rest[3]) == server_sid:  # field 6, session id: the server runs in its own session
                server += int(rest[11]) + int(rest[12])  # fields 14, 15: utime, stime
    with open("/proc/stat") as f:
        t = [int(x) for x in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    return time.process_time(), server / tick, (sum(t) - t[3] - t[4]) / tick


def with_cpu(before: tuple[float, float, float], after: tuple[float, float, float], run: dict) -> dict:
    client, server, machine = (b - a for a, b in zip(before, after))
    return {**run, "client_cpu_s": client, "server_cpu_s": server, "other_cpu_s": max(0.0, machine - client - server)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="40 questions, 32 new tokens, 1 repeat (smoke test; not judged)")
    ap.add_argument("--model", type=Path, help="HF model directory to serve (default: the tiny world's pivot)")
    ap.add_argument("--bench", help="a question set (built-in name or question.jsonl) instead of zoo questions")
    ap.add_argument("--questions", type=int, default=200, help="questions (2 turns each: 2 requests) (default 200)")
    ap.add_argument("--max-new-tokens", type=int, default=64, help="max_tokens of every request (default 64)")
    ap.add_argument("--temperature", type=float, default=0.0,
                    help="one temperature for every request (default 0: greedy)")
    ap.add_argument("--concurrency", type=int, default=16, help="requests in flight, both sides (default 16)")
    ap.add_argument("--chunk-size", type=int, default=64,
                    help="generate_answers chunk size, the harness default (default 64)")
    ap.add_argument("--direct", default=",".join(DIRECT_KINDS),
                    help=f"comma-separated direct clients, each its own target row (default {','.join(DIRECT_KINDS)})")
    ap.add_argument("--repeats", type=int, default=2,
                    help="runs per side, order alternating; best reported (default 2)")
    ap.add_argument("--prefix-caching", action="store_true",
                    help="leave vLLM's prefix cache on (default off: a repeat would reuse the previous run's prompts)")
    ap.add_argument("--seed", type=int, default=0, help="question and sampling seed (default 0)")
    a = ap.parse_args(argv)
    if a.quick:
        a.questions, a.max_new_tokens, a.repeats = min(a.questions, 40), min(a.max_new_tokens, 32), 1
    kinds = [k.strip() for k in a.direct.split(",") if k.strip()]
    bad = [k for k in kinds if k not in DIRECT_KINDS]
    if not kinds or bad:
        ap.error(f"--direct {','.join(bad) or '(empty)'}: choose from {','.join(DIRECT_KINDS)}")
    judged = not a.quick

    if not vllm_available():
        print("vLLM is not installed: nothing to measure (make venv-vllm installs the CPU build)")
        targets = [C.target(f"harness / direct ({k}) completion tokens/s", None, f">= {TARGET}", None) for k in kinds]
        C.write_results("generate", targets, error="vllm not installed")
        return 0

    model = a.model
    if model is None:
        from fusion.zoo import build_world  # noqa: PLC0415

        print("model: the tiny world's pivot (building runs/world if not there yet) ...", flush=True)
        model = build_world(C.REPO / "runs" / "world") / "pivot"
    questions = make_questions(a.questions, a.bench, a.seed)
    warm = make_questions(WARMUP_QUESTIONS, None, a.seed + 1)
    settings = GenerationSettings(max_new_tokens=a.max_new_tokens, temperature=a.temperature, seed=a.seed)
    n_turns = sum(len(q.turns) for q in questions)
    print(f"model {model}\n{len(questions)} questions ({n_turns} requests), max_new_tokens {a.max_new_tokens}, "
          f"temperature {a.temperature:g}, concurrency {a.concurrency}, chunk size {a.chunk_size}, "
          f"repeats {a.repeats}, direct: {', '.join(kinds)}", flush=True)

    options = VLLMOptions(dtype="float32", concurrency=a.concurrency,
                          extra_args=[] if a.prefix_caching else ["--no-enable-prefix-caching"])
    runs: dict[str, list[dict]] = {"ours": [], **{k: [] for k in kinds}}
    warnings: list[str] = []
    C.CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="generate-", dir=C.CACHE) as tmp_dir, \
            VLLMBackend(model, options, log_dir=C.CACHE / "generate" / "logs", model_id="bench-model") as backend:
        tmp = Path(tmp_dir)
        start = time.perf_counter()
        print(f"vLLM server up at {backend.server.base_url} (log {backend.server.log_path})", flush=True)
        extra = dict(backend.client.options.extra_body)
        directs = {k: Direct(k, backend.server.base_url, a.concurrency, options.request_timeout_s) for k in kinds}
        try:
            # Warm-up (untimed): both sides, a few questions; record the bodies our client sends
            # (a wrapper on its body builder) and check that the rebuild gives the same ones.
            sent: list[dict] = []
            body = backend.client._body
            backend.client._body = lambda req: sent.append(body(req)) or sent[-1]
            try:
                run_ours(backend, warm, tmp / "warmup.jsonl", settings, a.chunk_size)
            finally:
                del backend.client._body  # back to the class's method
            rebuilt = rebuild_phases(warm, tmp / "warmup.jsonl", settings, backend.model_id, extra)
            key = lambda b: json.dumps(b, sort_keys=True)  # noqa: E731
            if sorted(map(key, sent)) != sorted(key(b) for p in rebuilt for b in p):
                raise SystemExit("the rebuilt request bodies differ from the ones our client sent:\n"
                                 f"  ours    {sent[0]}\n  rebuilt {rebuilt[0][0]}")
            for d in directs.values():
                d.run(rebuilt)
            print(f"warm-up: {len(sent)} requests per side, rebuilt bodies equal ours "
                  f"({time.perf_counter() - start:.1f}s)", flush=True)

            phases, first_answers = None, None
            for i in range(max(1, a.repeats)):
                sides = ["ours", *kinds] if i % 2 == 0 else [*kinds, "ours"]
                for side in sides:
                    cpu_before = cpu_seconds(backend.server.proc.pid)
                    if side == "ours":
                        out = tmp / f"ours-{i}.jsonl"
                        r = rates(run_ours(backend, questions, out, settings, a.chunk_size))
                        texts = our_texts(questions, out)
                        if phases is None:
                            phases = rebuild_phases(questions, out, settings, backend.model_id, extra)
                            first_answers = texts
                        elif texts != first_answers:
                            diff = sum(x != y for p, q in zip(texts, first_answers) for x, y in zip(p, q))
                            warnings.append(f"ours run {i}: {diff} answers differ from run 0")
                    else:
                        stats, texts = run_direct(directs[side], phases)
                        r = rates(stats)
                        if diff := sum(x != y for p, q in zip(texts, first_answers) for x, y in zip(p, q)):
                            warnings.append(f"{side} run {i}: {diff} of {r['requests']} answers differ from ours")
                    r = with_cpu(cpu_before, cpu_seconds(backend.server.proc.pid), r)
                    runs[side].append(r)
                    print(f"  run {i} {side:7s} {r['wall_s']:6.2f}s  {r['requests']} requests  "
                          f"{r['completion_tokens']} tokens  {r['tokens_per_s']:7.1f} tok/s  "
                          f"{r['requests_per_s']:6.1f} req/s  CPU s: client {r['client_cpu_s']:.1f}, "
                          f"server {r['server_cpu_s']:.1f}, other {r['other_cpu_s']:.1f}", flush=True)
                    if r["other_cpu_s"] > 0.25 * r["wall_s"]:
                        warnings.append(f"{side} run {i}: other processes used {r['other_cpu_s']:.1f} CPU s "
                                        f"in {r['wall_s']:.1f} s: the machine was not idle")
        finally:
            for d in directs.values():
                d.close()

    tokens = {side: {r["completion_tokens"] for r in rs} for side, rs in runs.items()}
    if len(set().union(*tokens.values())) > 1:
        warnings.append(f"completion tokens differ between runs: {tokens}")

    best = {side: max(rs, key=lambda r: r["tokens_per_s"]) for side, rs in runs.items()}
    rows = []
    for side, rs in runs.items():
        b = best[side]
        rows.append([side if side == "ours" else f"direct ({side})", f"{b['wall_s']:.2f}", b["requests"],
                     b["completion_tokens"], f"{b['tokens_per_s']:.1f}",
                     f"{statistics.median(r['tokens_per_s'] for r in rs):.1f}", f"{b['requests_per_s']:.1f}",
                     f"{1000 * b['client_cpu_s'] / b['requests']:.2f}"])
    print()
    C.print_table(["side", "wall s", "requests", "tokens", "tok/s (best)", "tok/s (median)", "req/s (best)",
                   "client CPU ms/request"], rows)
    targets = []
    for k in kinds:
        ratio = best["ours"]["tokens_per_s"] / best[k]["tokens_per_s"]
        targets.append(C.target(f"harness / direct ({k}) completion tokens/s", ratio, f">= {TARGET}",
                                ratio >= TARGET if judged else None))
    print()
    C.print_table(["target", "value", "goal", "ok"],
                  [[t["metric"], f"{t['value']:.3f}", t["target"], t["ok"]] for t in targets])
    for w in warnings:
        print(f"WARNING: {w}")
    if not judged:
        print("(--quick: the workload is too short to judge the target)")
    o = best["ours"]
    print("\n" + "; ".join(
        f"ours {o['tokens_per_s']:.1f} tok/s {o['requests_per_s']:.1f} req/s vs direct ({k}) "
        f"{best[k]['tokens_per_s']:.1f} tok/s {best[k]['requests_per_s']:.1f} req/s: "
        f"ratio {t['value']:.3f} (target >= {TARGET})" for k, t in zip(kinds, targets)))
    path = C.write_results("generate", targets, model=str(model), questions=len(questions),
                           max_new_tokens=a.max_new_tokens, temperature=a.temperature, concurrency=a.concurrency,
                           chunk_size=a.chunk_size, prefix_caching=a.prefix_caching, runs=runs, warnings=warnings)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

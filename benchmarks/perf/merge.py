"""Merge benchmark: fuseval vs mergekit 0.1.5 on the same models, methods and YAML, in one run.

    .venv/bin/python benchmarks/perf/merge.py                  # 1B-parameter models (10-30 min)
    .venv/bin/python benchmarks/perf/merge.py --size tiny      # smoke test (--quick is the same)
    .venv/bin/python benchmarks/perf/merge.py --methods linear,ties --repeats 1

Builds (once) a bf16 base + 2 variants with fusion.zoo, installs mergekit into its own venv under
benchmarks/perf/.cache (never into the project venv), runs both tools as subprocesses on the
same YAML (order alternating per method, page cache warm for both), and reports wall time, peak
RSS, agreement of the outputs and the targets of DESIGN.md section 7. Results also go to
benchmarks/perf/.cache/merge_results.json.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

METHODS = ["linear", "ties", "dare_ties", "slerp", "task_arithmetic"]
LINEAR_EXTRA = 3  # extra fuseval-only runs of the linear merge (see run_method)
RANDOM_METHODS = {"dare_ties"}  # drop masks come from different generators: no numeric comparison
# Several input shards per model, so the readers cross shard boundaries.
SHARD_BYTES = {"tiny": 100_000, "small": 2_000_000, "1b": 1_000_000_000}
MK_VENV = C.CACHE / "mergekit-venv"
MK_VERSION = "0.1.5"
TORCH_VERSION = "2.13.0"  # the machine's pip config finds the CPU wheel of this version locally


def build_models(size: str) -> dict[str, Path]:
    from fusion.zoo import merge_set

    print(f"model set: {size} (bf16), building if not cached ...", flush=True)
    return merge_set(C.CACHE / "zoo", size=size, n_variants=2, seed=0, dtype="bfloat16",
                     shard_bytes=SHARD_BYTES[size])


def ensure_mergekit() -> tuple[Path | None, str]:
    """Path of mergekit-yaml in its own venv (created on first use), or None and the reason."""
    exe, py = MK_VENV / "bin" / "mergekit-yaml", MK_VENV / "bin" / "python"
    check = [str(py), "-c", "import importlib.metadata as m; print(m.version('mergekit'))"]
    if exe.exists() and subprocess.run(check, capture_output=True, text=True).stdout.strip() == MK_VERSION:
        return exe, f"mergekit {MK_VERSION}"
    print(f"installing mergekit {MK_VERSION} into {MK_VENV} ...", flush=True)
    steps = [["python3.11", "-m", "venv", str(MK_VENV)],
             [str(py), "-m", "pip", "install", "--quiet", f"torch=={TORCH_VERSION}"],
             [str(py), "-m", "pip", "install", "--quiet", f"mergekit=={MK_VERSION}"]]
    for step in steps:
        try:
            r = subprocess.run(step, capture_output=True, text=True)
        except OSError as e:
            return None, f"{step[0]}: {e}"
        if r.returncode != 0:
            last = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
            return None, f"`{' '.join(step[:4])}` failed: {last[0]}"
    return (exe, f"mergekit {MK_VERSION}") if exe.exists() else (None, "mergekit-yaml missing after install")


def recipe(method: str, m: dict[str, Path]) -> dict:
    """The one YAML both tools read; dtype = compute dtype, out_dtype = written dtype."""
    b, v1, v2 = (str(m[k].resolve()) for k in ("base", "variant1", "variant2"))
    cfg: dict = {"merge_method": method}
    if method == "linear":  # no base_model: mergekit would add an unlisted base as a third input
        cfg["models"] = [{"model": v1, "parameters": {"weight": 0.5}}, {"model": v2, "parameters": {"weight": 0.5}}]
    elif method == "slerp":
        cfg |= {"base_model": b, "models": [{"model": b}, {"model": v1}], "parameters": {"t": 0.5}}
    else:
        p = {"weight": 0.5} if method == "task_arithmetic" else {"weight": 1.0, "density": 0.5}
        cfg |= {"base_model": b, "models": [{"model": v1, "parameters": dict(p)}, {"model": v2, "parameters": dict(p)}]}
    return cfg | {"dtype": "float32", "out_dtype": "bfloat16"}


def input_files(cfg: dict) -> list[Path]:
    """The safetensors files of every model a recipe reads."""
    dirs = {cfg.get("base_model")} | {e["model"] for e in cfg["models"]}
    return sorted(f for d in dirs if d for f in Path(d).glob("*.safetensors"))


def fuseval_cmd(config: Path, out: Path) -> list[str]:
    exe = Path(sys.executable).parent / "fuseval"
    head = [str(exe)] if exe.exists() else [sys.executable, "-m", "harness.cli"]
    return head + ["merge", str(config), str(out), "--force", "--shard-size", "1GB"]


def merge_seconds(log: Path) -> float | None:
    """The merge's own time as `fuseval merge` prints it ("..., 3 shard(s), 1.42s"): from
    opening the inputs to the output's rename, without interpreter and torch start-up."""
    m = re.search(r"shard\(s\),\s*([0-9.]+)s", " ".join(log.read_text(errors="replace").split()))
    return float(m.group(1)) if m else None


def mergekit_cmd(exe: Path, config: Path, out: Path) -> list[str]:
    # mergekit computes on CPU by default (--no-cuda); said explicitly so a GPU box changes nothing.
    return [str(exe), str(config), str(out), "--out-shard-size", "1B", "--no-cuda"]


def max_abs_diff(a: Path, b: Path) -> tuple[float, str, float]:
    """Worst per-tensor max |a - b| over all tensors (float32), its tensor, and the fraction of differing entries."""
    from safetensors import safe_open

    def where(d: Path) -> dict[str, Path]:
        return {k: f for f in sorted(d.glob("*.safetensors")) for k in safe_open(str(f), "pt").keys()}

    wa, wb = where(a), where(b)
    if set(wa) != set(wb):
        raise RuntimeError(f"tensor names differ, e.g. {sorted(set(wa) ^ set(wb))[:3]}")
    worst, worst_name, n_diff, n_all = 0.0, "", 0, 0
    for name in sorted(wa):
        with safe_open(str(wa[name]), "pt") as fa, safe_open(str(wb[name]), "pt") as fb:
            ta, tb = fa.get_tensor(name).float(), fb.get_tensor(name).float()
        if ta.shape != tb.shape:
            raise RuntimeError(f"{name}: shapes {tuple(ta.shape)} vs {tuple(tb.shape)}")
        d = (ta - tb).abs()
        n_diff += int((d > 0).sum())
        n_all += d.numel()
        if float(d.max()) > worst or not worst_name:
            worst, worst_name = float(d.max()), name
    return worst, worst_name, n_diff / max(n_all, 1)


def run_method(i: int, method: str, models: dict, mk: Path | None, work: Path, repeats: int) -> dict:
    """Run both tools `repeats` times (order alternating); keep the fastest time and the largest peak RSS."""
    import yaml

    cfg = recipe(method, models)
    config = work / "configs" / f"{method}.yml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    cmds = {"fuseval": lambda out: fuseval_cmd(config, out)}
    if mk:
        cmds["mergekit"] = lambda out: mergekit_cmd(mk, config, out)
    row: dict = {"method": method, **{tool: {"runs": []} for tool in cmds}}
    # fuseval's linear merge takes seconds and its I/O-floor ratio is the noisiest figure here (its
    # time is mostly the kernel's work on page-cache writes): LINEAR_EXTRA more runs of fuseval alone.
    order = [list(cmds) if (i + rep) % 2 == 0 else list(cmds)[::-1] for rep in range(repeats)]
    if method == "linear":
        order += [["fuseval"]] * LINEAR_EXTRA
    for rep, tools in enumerate(order):
        for tool in tools:
            out = work / "out" / f"{tool}-{method}"
            shutil.rmtree(out, ignore_errors=True)
            C.read_files(input_files(cfg))  # warm page cache for both tools alike
            print(f"  {method:16s} {tool:8s} ...", end=" ", flush=True)
            r = C.run_measured(cmds[tool](out), work / "logs" / f"{tool}-{method}-{rep + 1}.log")
            print(f"{r.seconds:7.1f}s  peak RSS {r.peak_rss_mb:7.0f} MB (anon {r.peak_anon_mb:.0f} MB)"
                  + ("" if r.rc == 0 else f"  FAILED rc={r.rc}, see {r.log}"), flush=True)
            if r.rc != 0:
                print("\n".join("      " + line for line in r.tail().splitlines()))
            row[tool]["runs"].append({"rc": r.rc, "seconds": r.seconds, "peak_rss_mb": r.peak_rss_mb,
                                      "peak_anon_mb": r.peak_anon_mb, "hwm_sampled_mb": r.hwm_sampled_mb,
                                      "log": str(r.log)})
            if tool == "fuseval" and r.rc == 0:
                row[tool]["runs"][-1]["merge_seconds"] = merge_seconds(r.log)
            row[tool]["out"] = str(out)
    for tool in cmds:
        runs = row[tool]["runs"]
        row[tool]["ok"] = all(r["rc"] == 0 for r in runs)
        row[tool]["seconds"] = min(r["seconds"] for r in runs)  # least disturbed run
        row[tool]["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)  # worst case
        inner = [r["merge_seconds"] for r in runs if r.get("merge_seconds")]
        row[tool]["merge_seconds"] = min(inner) if inner else None
    if method not in RANDOM_METHODS and all(row.get(t, {}).get("ok") for t in ("fuseval", "mergekit")):
        try:
            worst, name, frac = max_abs_diff(Path(row["fuseval"]["out"]), Path(row["mergekit"]["out"]))
            row["agreement"] = {"max_abs_diff": worst, "tensor": name, "frac_entries_differ": frac}
        except RuntimeError as e:
            row["agreement"] = {"error": str(e)}
    return row


def io_floor(models: dict) -> dict:
    """Time to read every input byte of the linear merge, cold (evicted first) and warm (best of 2),
    and to write the output's bytes: first time, and best of 2 (the second reuses memory the first
    freed; on a VM that hands freed memory back to its host, the first write pays to get it back),
    and best of 2 with O_DIRECT, past the page cache, as fuseval writes its shards."""
    files = input_files(recipe("linear", models))
    C.evict_files(files)
    nbytes, cold = C.read_files(files)
    warm = min(C.read_files(files)[1] for _ in range(2))
    out_bytes = nbytes // len(recipe("linear", models)["models"])
    writes = [C.write_bytes(C.CACHE / "write-floor.tmp", out_bytes) for _ in range(2)]
    direct = [C.write_bytes_direct(C.CACHE / "write-floor.tmp", out_bytes) for _ in range(2)]
    return {"bytes": nbytes, "cold_s": cold, "warm_s": warm, "write_s": writes[0], "write_warm_s": min(writes),
            "write_direct_s": None if None in direct else min(direct)}


def fmt(x: float | None, spec: str = ".1f", suffix: str = "") -> str:
    return "n/a" if x is None else f"{x:{spec}}{suffix}"


def report(rows: list[dict], floor: dict, mk_note: str, judged: bool) -> list[dict]:
    """Print the result table and return the target checks (not judged, ok=None, below the 1b size,
    where interpreter start-up dominates both tools' times)."""
    targets, table = [], []
    for r in rows:
        fv, mk = r.get("fuseval", {}), r.get("mergekit", {})
        t_f = fv.get("seconds") if fv.get("ok") else None
        t_m = mk.get("seconds") if mk.get("ok") else None
        ratio = t_m / t_f if t_f and t_m else None
        rss_f = fv.get("peak_rss_mb") if fv.get("ok") else None
        rss_m = mk.get("peak_rss_mb") if mk.get("ok") else None
        rss_ratio = rss_f / rss_m if rss_f and rss_m else None
        checks = [C.target(f"{r['method']}: time mergekit/fuseval", ratio, "> 1", None if ratio is None else ratio > 1)]
        if r["method"] in ("ties", "dare_ties"):
            checks.append(C.target(f"{r['method']}: time mergekit/fuseval", ratio, ">= 5",
                                   None if ratio is None else ratio >= 5))
        checks.append(C.target(f"{r['method']}: peak RSS fuseval/mergekit", rss_ratio, "<= 0.5",
                               None if rss_ratio is None else rss_ratio <= 0.5))
        if r["method"] == "linear":
            # The merge's own time (start-up excluded: ~1.5 s of importing torch is no part of merging).
            t_in = fv.get("merge_seconds") if fv.get("ok") else None
            x = t_in / floor["warm_s"] if t_in else None
            checks.append(C.target("linear: fuseval merge time / warm read floor", x, "<= 2",
                                   None if x is None else x <= 2))
        if not judged:
            checks = [{**c, "ok": None} for c in checks]
        targets += checks
        verdict = ", ".join(f"{c['target']}:{'n/a' if c['ok'] is None else 'pass' if c['ok'] else 'FAIL'}"
                            for c in checks)
        table.append([r["method"], fmt(t_f), fmt(t_m), fmt(ratio, ".2f", "x"), fmt(rss_f, ".0f"), fmt(rss_m, ".0f"),
                      fmt(rss_ratio, ".2f"), verdict])
    print()
    C.print_table(["method", "fuseval s", "mergekit s", "time ratio", "fuseval RSS MB", "mergekit RSS MB",
                   "RSS ratio", "targets (time ratio, [>=5x], RSS ratio, [I/O])"], table)
    print("time ratio = mergekit/fuseval (>1: fuseval faster), fastest of the repeats; RSS ratio = fuseval/mergekit,\n"
          "largest peak RSS (wait4 ru_maxrss) of the repeats")
    if "not available" in mk_note:
        print(mk_note)
    lin = next((r["fuseval"] for r in rows if r["method"] == "linear" and r.get("fuseval", {}).get("ok")), None)
    print(f"\nI/O floor (linear inputs, {floor['bytes'] / 1e9:.2f} GB): read warm {floor['warm_s']:.2f}s, "
          f"cold {floor['cold_s']:.2f}s; writing the output's bytes {floor['write_warm_s']:.2f}s "
          f"({floor['write_s']:.2f}s the first time)"
          + (f", with O_DIRECT (as fuseval writes) {floor['write_direct_s']:.2f}s"
             if floor.get("write_direct_s") else ""))
    if lin and lin.get("merge_seconds"):
        t_in, t_wall = lin["merge_seconds"], lin["seconds"]
        print(f"fuseval linear: merge {t_in:.2f}s (process {t_wall:.2f}s with start-up) = "
              f"{t_in / floor['warm_s']:.2f}x the warm read floor ({t_wall / floor['warm_s']:.2f}x with start-up), "
              f"{t_in / floor['cold_s']:.2f}x the cold one, "
              f"{t_in / (floor['warm_s'] + floor['write_warm_s']):.2f}x warm read + write")
    print("\nagreement fuseval vs mergekit (bf16 outputs, max |diff| over all tensors):")
    for r in rows:
        a = r.get("agreement")
        if r["method"] in RANDOM_METHODS:
            print(f"  {r['method']:16s} n/a (random drop masks)")
        elif not a:
            print(f"  {r['method']:16s} n/a (a run failed or mergekit not available)")
        elif "error" in a:
            print(f"  {r['method']:16s} cannot compare: {a['error']}")
        else:
            where = (f"worst tensor {a['tensor']}; {a['frac_entries_differ']:.3%} of entries differ"
                     if a["max_abs_diff"] else "bit-identical")
            print(f"  {r['method']:16s} {a['max_abs_diff']:.3g}  ({where})")
    return targets


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(SHARD_BYTES), default="1b", help="zoo model size (default 1b)")
    ap.add_argument("--quick", action="store_true", help="same as --size tiny (used by run_all.py --quick)")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)}")
    ap.add_argument("--repeats", type=int, default=2,
                    help="runs per tool and method, order alternating; fastest time and largest RSS reported "
                         "(default 2)")
    ap.add_argument("--keep-outputs", action="store_true", help="keep merged models under .cache/merge/<size>/out")
    a = ap.parse_args(argv)
    size = "tiny" if a.quick else a.size
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    if bad := [m for m in methods if m not in METHODS]:
        ap.error(f"unknown method(s) {bad}; choose from {METHODS}")
    sys.path.insert(0, str(C.REPO))
    models = build_models(size)
    mk, mk_note = ensure_mergekit()
    if mk is None:
        mk_note = f"mergekit: not available ({mk_note})"
    print(mk_note, flush=True)
    work = C.CACHE / "merge" / size
    floor = io_floor(models)
    rows = []
    for i, method in enumerate(methods):
        rows.append(run_method(i, method, models, mk, work, max(1, a.repeats)))
        if not a.keep_outputs:  # 1B outputs are 2 GB each; keep the disk and page cache for the inputs
            shutil.rmtree(work / "out", ignore_errors=True)
    targets = report(rows, floor, mk_note, judged=size == "1b")
    if size != "1b":
        print(f"(targets are judged at --size 1b only; at {size} start-up time dominates)")
    path = C.write_results("merge", targets, size=size, mergekit=mk_note, io_floor=floor, rows=rows)
    print(f"\nresults: {path}")
    return 0 if all(r.get("fuseval", {}).get("ok") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Prepared CUDA check: every merge method, transformers generation and teacher top-k on CUDA vs CPU.

Not a test (CI has no GPU). Prepare on the CPU machine, then run it where a GPU is lent:

    mkdir -p .gpu/ref && cp -r runs/world/world-* .gpu/world     # the tiny world (make test builds it)
    fuseval generate .gpu/world/pivot --bench zoo --backend transformers --out .gpu/ref/pivot-cpu.jsonl \
        --max-new-tokens 32 --model-id pivot                     # the CPU reference answers
    OUT=out python benchmarks/gpu/check_cuda.py                  # on the GPU machine, from the repo root

It writes $OUT/gpu_check.json: per merge method the max |CUDA - CPU| over all tensors of a small
zoo merge set, how many of the 100 zoo answers on CUDA (fp32 and bf16) equal the CPU ones, and
top-1 agreement of teacher extraction. Result on an H100 (2026-11-28): merges within 2.4e-7,
fp32 answers 100/100 equal, bf16 98/100, teacher top-1 1579/1579 (max log-prob diff 1.9e-6).
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

sys.path.insert(0, os.getcwd())  # run from the repo root: the tests' merge configs are reused

from fusion.conversations import load_conversations  # noqa: E402
from fusion.distill import extract_teachers, record_key  # noqa: E402
from fusion.merge import MergeOptions, parse_merge_config, run_merge  # noqa: E402
from fusion.zoo import merge_set  # noqa: E402
from tests.harness.test_cli_merge import ALL_METHODS, _config  # noqa: E402

OUT = Path(os.environ.get("OUT", "/tmp/out"))


def _answers(path: Path) -> dict:
    rows = [json.loads(line) for line in path.open()]
    return {r["question_id"]: r["choices"][0]["turns"] for r in rows}


def check_merges() -> dict:
    """Every merge method on cuda and on cpu: max |difference| over all tensors of a small zoo merge set."""
    ts = merge_set("/tmp/zoo", size="small", n_variants=2)
    merges = {}
    for m in sorted(ALL_METHODS):
        c = parse_merge_config(_config(m, ts), m)
        row = {}
        outs = {}
        for dev in ("cpu", "cuda"):
            t0 = time.perf_counter()
            r = run_merge(c, f"/tmp/m/{m}-{dev}", options=MergeOptions(device=dev, force=True))
            row[f"{dev}_s"] = round(time.perf_counter() - t0, 2)
            outs[dev] = {}
            for f in sorted(Path(r.out_dir).glob("*.safetensors")):
                outs[dev].update(load_file(f))
        diffs = [float((outs["cpu"][k].float() - outs["cuda"][k].float()).abs().max()) for k in outs["cpu"]]
        scale = max(float(v.float().abs().max()) for v in outs["cpu"].values())
        row.update(max_abs_diff=max(diffs), max_abs=scale, same_keys=set(outs["cpu"]) == set(outs["cuda"]))
        merges[m] = row
        print(m, row, flush=True)
    return merges


def check_generate() -> dict:
    """The transformers backend on cuda (fp32 and bf16) against the CPU reference answers."""
    ref = _answers(Path(".gpu/ref/pivot-cpu.jsonl"))
    gen = {}
    for tag, extra in (("fp32", []), ("bf16", ["-o", "dtype=bfloat16"])):
        out = OUT / f"pivot-cuda-{tag}.jsonl"
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "harness.cli", "generate", ".gpu/world/pivot", "--bench", "zoo",
                            "--backend", "transformers", "--device", "cuda", "--out", str(out),
                            "--max-new-tokens", "32", "--model-id", "pivot", *extra], capture_output=True, text=True)
        got = _answers(out) if out.exists() else {}
        gen[tag] = {"rc": p.returncode, "s": round(time.perf_counter() - t0, 1), "stderr_tail": p.stderr[-300:],
                    "answers": len(got), "equal_to_cpu": sum(got.get(k) == v for k, v in ref.items()), "of": len(ref)}
        print(tag, gen[tag], flush=True)
    return gen


def check_teachers() -> dict:
    """Teacher top-k extraction on cuda against cpu: top-1 agreement and log-prob difference."""
    convs = load_conversations(".gpu/world/fusion.jsonl")[:96]
    st = {d: extract_teachers(".gpu/world/pivot", convs, f"/tmp/teach-{d}", top_k=10, device=d)
          for d in ("cpu", "cuda")}
    top1 = rows = 0
    maxlp = 0.0
    for c in convs:
        a, b = st["cpu"].get(record_key(c)), st["cuda"].get(record_key(c))
        rows += len(a.ids)
        top1 += int((a.ids[:, 0] == b.ids[:, 0]).sum())
        maxlp = max(maxlp, float(np.abs(a.logprobs[:, 0] - b.logprobs[:, 0]).max()))
    return {"rows": rows, "top1_equal": top1, "max_top1_logprob_diff": maxlp}


def main() -> None:
    OUT.mkdir(exist_ok=True, parents=True)
    res = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0)}
    print(res, flush=True)
    for key, check in (("merges", check_merges), ("generate", check_generate), ("teachers", check_teachers)):
        res[key] = check()
        (OUT / "gpu_check.json").write_text(json.dumps(res, indent=1))  # saved after each part
    print(res["teachers"], flush=True)


if __name__ == "__main__":
    main()

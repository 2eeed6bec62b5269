"""`python -m fusion.zoo merge-set ROOT [--size tiny|small|1b]`: build a local model set for merges."""

from __future__ import annotations

import argparse

from fusion.io import DEFAULT_SHARD_BYTES
from fusion.zoo.merge_sets import SIZES, merge_set


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m fusion.zoo", description="Build the tiny local model zoo.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    ms = sub.add_parser("merge-set", help="base + fine-tuned-like variants for merge tests and benchmarks")
    ms.add_argument("root")
    ms.add_argument("--size", choices=sorted(SIZES), default="tiny")
    ms.add_argument("--variants", type=int, default=2)
    ms.add_argument("--seed", type=int, default=0)
    ms.add_argument("--dtype", default="float32")
    ms.add_argument("--shard-bytes", type=int, default=DEFAULT_SHARD_BYTES)
    a = ap.parse_args(argv)
    for role, path in merge_set(a.root, a.size, a.variants, a.seed, a.dtype, a.shard_bytes).items():
        print(f"{role}\t{path}")


if __name__ == "__main__":
    main()

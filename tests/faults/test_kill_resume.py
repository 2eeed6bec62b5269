"""SIGKILL at random points of `fuseval run`, `fuseval merge` and `fuseval fuse`, then a rerun: nothing lost,
nothing repeated, and nothing half-written that looks complete."""

from __future__ import annotations

import hashlib
import signal
from collections import Counter
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from tests.faults.conftest import KEY_ENV, TALLY, compare, fuseval, integrity, snapshot, stub_suite

KILLED = -signal.SIGKILL


def traced(tmp_path: Path, *args, env: dict | None = None) -> Counter:
    """Run `fuseval ARGS` cleanly and count the failpoints it passes."""
    trace = tmp_path / f"trace-{len(list(tmp_path.glob('trace-*')))}.txt"
    r = fuseval(*args, env={**(env or {}), "FUSEVAL_FAULTS_TRACE": str(trace)})
    assert r.returncode == 0, r.stderr[-3000:]
    return Counter(trace.read_text().split())


def kill_at(rng, passes: Counter, names: list[str]) -> str:
    name = rng.choice([n for n in names if passes[n]])
    return f"{name}@{rng.randint(1, passes[name])}:kill"


def whole_reports(workspace: Path) -> int:
    """Every report file present is complete (they are renamed into place); returns how many reports."""
    n = 0
    for html in workspace.glob("reports/*/report.html"):
        text = html.read_text()
        assert text.rstrip().endswith("</html>"), html
        n += 1
    for md in workspace.glob("reports/*/report.md"):
        assert md.read_text().strip(), md
    for png in workspace.glob("reports/*/figures/*.png"):
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[-8:-4] == b"IEND", png
    return n


@pytest.mark.timeout(900)
def test_run_killed_at_random_points_resumes_without_loss_or_duplicates(stub, tmp_path, rng):
    url, _ = stub
    suite = stub_suite(tmp_path, url)
    ref_db = tmp_path / "reference.db"
    passes = traced(tmp_path, "run", suite, "--workspace", tmp_path / "reference", "--store", ref_db, env=KEY_ENV)
    assert passes["store.commit"] >= 8 and passes["files.write"] >= 4  # generation, judging, results, report

    db, ws = tmp_path / "runs.db", tmp_path / "ws"
    kills = 0
    for _ in range(6):
        faults = kill_at(rng, passes, ["store.commit", "files.write"])
        r = fuseval("run", suite, "--workspace", ws, "--store", db, faults=faults, env=KEY_ENV)
        if r.returncode == KILLED:
            kills += 1
        else:  # a resumed run has less left to do and can finish before the N-th pass
            assert r.returncode == 0, (faults, r.stderr[-3000:])
        whole_reports(ws)
    TALLY["injected"] += kills
    assert kills >= 3

    r = fuseval("run", suite, "--workspace", ws, "--store", db, env=KEY_ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "0 questions answered" in r.stdout + r.stderr and "judgments: 0 new" in r.stdout + r.stderr
    TALLY["recovered"] += 1
    integrity(db)
    compare(snapshot(ref_db), snapshot(db))
    assert whole_reports(ws) >= 1


def _tensors(d: Path) -> dict:
    out = {}
    for f in sorted(d.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def _digest(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir()) if p.is_file()}


@pytest.mark.timeout(600)
@pytest.mark.parametrize("method", ["ties", "linear"])  # whole tensors; blocks (elementwise methods)
def test_merge_killed_at_random_tensors_leaves_nothing_that_looks_complete(tiny_set, tmp_path, rng, write_yaml,
                                                                           method):
    cfg = write_yaml({"merge_method": method, "base_model": str(tiny_set["base"]),
                      "models": [{"model": str(tiny_set["variant1"]), "parameters": {"weight": 1.0, "density": 0.5}},
                                 {"model": str(tiny_set["variant2"]), "parameters": {"weight": 0.5, "density": 0.5}}],
                      "dtype": "float32"} if method == "ties" else
                     {"merge_method": method,
                      "models": [{"model": str(tiny_set["variant1"]), "parameters": {"weight": 1.0}},
                                 {"model": str(tiny_set["variant2"]), "parameters": {"weight": 0.5}}],
                      "dtype": "float32", "out_dtype": "bfloat16"})
    passes = traced(tmp_path, "merge", cfg, tmp_path / "reference")
    reference = _tensors(tmp_path / "reference")

    out = tmp_path / "out" / "merged"
    for faults in [kill_at(rng, passes, ["merge.tensor"]) for _ in range(2)] + ["files.write@1:kill"]:
        r = fuseval("merge", cfg, out, faults=faults)
        assert r.returncode == KILLED, (faults, r.stderr[-2000:])
        TALLY["injected"] += 1
        assert not out.exists() and any(p.name.startswith(".merged.partial-") for p in out.parent.iterdir())
    r = fuseval("merge", cfg, out)
    assert r.returncode == 0, r.stderr[-2000:]
    TALLY["recovered"] += 1
    got = _tensors(out)
    assert got.keys() == reference.keys() and all(got[k].equal(reference[k]) for k in got)
    assert [p.name for p in out.parent.iterdir()] == ["merged"]  # the killed runs' partial directories are gone

    # Replacing a finished merge (--force): a kill, or a full disk, leaves the old one whole.
    before = _digest(out)
    r = fuseval("merge", cfg, out, "--force", faults=kill_at(rng, passes, ["merge.tensor"]))
    assert r.returncode == KILLED and _digest(out) == before
    r = fuseval("merge", cfg, out, "--force", faults=f"merge.tensor@{passes['merge.tensor'] // 2}:enospc")
    assert r.returncode == 1 and _digest(out) == before
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert "No space left on device" in r.stderr and ".safetensors" in r.stderr and "cannot write tensor" in r.stderr
    TALLY["injected"] += 2
    assert [p.name for p in out.parent.iterdir()] == ["merged"]  # the failed one cleaned up after itself


@pytest.mark.timeout(900)
def test_fuse_killed_in_extraction_training_and_merging_resumes(tmp_path, rng):
    from fusion import zoo
    from tests.fusion.test_pipeline import _cfg, _micro

    world = zoo.build_world(tmp_path / "world", _micro())
    cfg = _cfg(world).model_dump(mode="json")
    cfg["train"].update(steps=6, checkpoint_every=2)
    recipe = tmp_path / "fuse.yml"
    recipe.write_text(yaml.safe_dump(cfg, sort_keys=False))
    passes = traced(tmp_path, "fuse", recipe, tmp_path / "reference")
    assert passes["teachers.shard"] and passes["train.step"] and passes["merge.tensor"]

    out = tmp_path / "fused"
    # One kill per stage, in pipeline order: teachers, then the targets' training (the control trains after the
    # merge, so its steps are left out), then the stage-2 merge; each rerun resumes the last one's work first.
    target_steps = passes["train.step"] * len(cfg["sources"]) // (len(cfg["sources"]) + 1)
    for name, top in [("teachers.shard", passes["teachers.shard"]), ("train.step", target_steps),
                      ("merge.tensor", passes["merge.tensor"])]:
        faults = f"{name}@{rng.randint(1, top)}:kill"
        r = fuseval("fuse", recipe, out, faults=faults)
        assert r.returncode == KILLED, (faults, r.stderr[-2000:])
        TALLY["injected"] += 1
    r = fuseval("fuse", recipe, out)
    assert r.returncode == 0, r.stderr[-3000:]
    TALLY["recovered"] += 1
    for model in ("merged", "control", *(p.name for p in (tmp_path / "reference" / "seed-0").glob("target-*"))):
        a, b = _tensors(tmp_path / "reference" / "seed-0" / model), _tensors(out / "seed-0" / model)
        assert a.keys() == b.keys(), model
        # Resumed training restarts from its last checkpoint with the same batches and optimizer state.
        assert all(a[k].allclose(b[k], rtol=0, atol=1e-6) for k in a), model

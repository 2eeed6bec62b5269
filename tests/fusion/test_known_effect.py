"""The positive control: in the known-effect world fusion must beat gold-label training.

The world (`zoo.known_effect_spec`): the pivot never saw the sources' domains, and the fusion data's
answers on those domains are shuffled, so the labels there carry no skill while the sources have it.
Checks:
1. mechanism: on each source's own domains min_ce takes that source's distribution for (nearly)
   every fusion token: the teachers' share, as the reports print it;
2. stage 1 carries the effect: a stage-1 target minus the gold-label control, paired by question
   (cluster bootstrap, 90% interval as the gate reads it), lies wholly above the demo's margin +0.05:
   *improved* (today target-source_records, whose code answers tokenize alike in both tokenizers, so
   every answer token takes the teacher's distribution: code 0.93-0.99 against the control's 0.07);
3. the verdict the issue asks for, a fused model improved against the control: fused jointly (stage1:
   joint, FuseLLM's way: min_ce over the pivot and both sources at once, one target, no merge) it holds
   (today +0.11, 90% interval +0.08 to +0.15; code 0.58 against the control's 0.07);
4. FuseChat's pairwise recipe, fused (the stage-2 VaRM merge) improved against the control, is a
   strict xfail: it does not hold today. The measured defects (issue 21): the merge of two targets
   that learned different skills keeps neither (VaRM, linear, TIES and task arithmetic alike bring
   target-source_records' code from 0.99 back to 0.07-0.14; its own delta from the pivot scaled by 0.5
   answers 0.03 of the code questions, by 0.75 0.38: the skill is not linear in the delta, which is
   70-75% of the pivot's weight norm, a retraining rather than a light fine-tune; SCE, TIES at density
   0.2 or 1.0 and DARE-TIES fail alike, and at lr 3e-4 or 1e-4 the targets learn no skill to keep);
   extraction's answers tokenize differently (pivot 'ĠBern', source 'ĠB' 'er' 'n'), so no answer
   token is transferred; at λ = 0.5 the shuffled labels cancel the teacher (target-source_numbers'
   arithmetic 0.06; 0.50 at λ = 0.1).
   When fusion gets this right the xfail turns into a failure, and the marker comes off.

The world and the fused run are cached under $FUSEVAL_WORKSPACE (default: runs/) like the demo's.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from fusion import zoo
from fusion.conversations import load_conversations
from fusion.pipeline import load_fuse_config, run_fuse
from harness.analysis.stats import paired_difference

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

WORKSPACE = Path(os.environ.get("FUSEVAL_WORKSPACE", Path(__file__).resolve().parents[2] / "runs"))
MARGIN = 0.05  # the demo suites' gate margin


@pytest.fixture(scope="module")
def known():
    world = zoo.build_world(WORKSPACE / "world", zoo.known_effect_spec())
    recipe = world / "fuse.yml"
    cfg = load_fuse_config(recipe).model_copy(update={"seeds": [0]})
    key = hashlib.sha256(recipe.read_bytes()).hexdigest()[:8]
    out = WORKSPACE / "fused" / f"{world.name}-{key}"
    report = run_fuse(cfg, out)
    test = load_conversations(world / "test.jsonl")
    spec = zoo.known_effect_spec()
    joint = WORKSPACE / "fused" / f"{world.name}-{key}-joint"
    report_joint = run_fuse(cfg.model_copy(update={"stage1": "joint", "control": False}), joint)
    models = {"control": out / "seed-0" / "control", "fused": out / "seed-0" / "merged",
              "fused-joint": joint / "seed-0" / "target-joint"}
    models |= {f"target-{s.name}": out / "seed-0" / f"target-{s.name}" for s in spec.sources}
    scores = {name: zoo.score(path, test) for name, path in models.items()}  # [questions, 2 turns]
    return {"spec": spec, "report": report, "report_joint": report_joint, "test": test, "scores": scores}


def _per_domain(known, name: str) -> dict[str, float]:
    domains = sorted({c.domain for c in known["test"]})
    s = known["scores"][name]
    return {d: round(float(s[[c.domain == d for c in known["test"]]].mean()), 2) for d in domains}


def test_teachers_give_the_targets_on_their_own_domains(known):
    for s in known["spec"].sources:
        share = known["report"]["stage1"][s.name]["teacher_token_share"]
        print(f"{s.name}: teachers' share of fusion tokens per domain {share}")
        for d in s.domains:
            assert share[d] >= 0.9, (s.name, d, share)
        for d in known["spec"].pivot.domains:
            assert share[d] <= 0.1, (s.name, d, share)


def _vs_control(known, name: str) -> tuple[float, float, float]:
    cand, control = known["scores"][name].astype(float), known["scores"]["control"].astype(float)
    clusters = np.repeat(np.arange(len(cand)), cand.shape[1])
    mean, low, high = paired_difference(cand.reshape(-1), control.reshape(-1), clusters, level=0.90, n_boot=4000)
    print(f"{name} - control: {mean:+.3f} (90% interval {low:+.3f} to {high:+.3f}) over {len(cand)} questions; "
          f"{name} per domain {_per_domain(known, name)}, control {_per_domain(known, 'control')}")
    return mean, low, high


def test_a_stage1_target_beats_the_control_beyond_the_margin(known):
    results = {name: _vs_control(known, name) for name in known["scores"] if name.startswith("target-")}
    best = max(results, key=lambda n: results[n][1])
    assert results[best][1] > MARGIN, ("no stage-1 target beat gold-label training", results)


def test_joint_fusion_beats_the_control_beyond_the_margin(known):
    share = known["report_joint"]["stage1"]["joint"]["teacher_token_share"]
    for s in known["spec"].sources:  # min_ce over all three takes each source on its own domains
        assert all(share[d] >= 0.9 for d in s.domains), share
    mean, low, high = _vs_control(known, "fused-joint")
    assert low > MARGIN, ("joint fusion did not beat gold-label training in the known-effect world", mean, low, high)


@pytest.mark.xfail(strict=True, reason="issue 21: the stage-2 merge of targets with different skills keeps neither")
def test_fused_beats_the_control_beyond_the_margin(known):
    mean, low, high = _vs_control(known, "fused")
    assert low > MARGIN, ("fusion did not beat gold-label training in the known-effect world", mean, low, high)

"""The FuseChat pipeline end to end on a micro world (a few training steps), its CLI and bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

from fusion import zoo
from fusion.chat import load_tokenizer
from fusion.common.errors import FusevalError
from fusion.conversations import load_conversations
from fusion.distill import TeacherStore, record_key
from fusion.pipeline import FuseConfig, align_source, fused_examples, load_fuse_config, run_fuse


def _micro() -> zoo.WorldSpec:
    base = zoo.WorldSpec()
    small = {"steps": 3, "hidden": 32, "intermediate": 64, "layers": 1, "heads": 2, "batch_size": 8}
    return zoo.WorldSpec(train_per_domain=40, fusion_per_domain=12, test_per_domain=4,
                         pivot=base.pivot.model_copy(update={**small, "light_per_domain": 4}),
                         sources=[s.model_copy(update=small) for s in base.sources])


def _cfg(world) -> FuseConfig:
    """The world's recipe, cut to 2 training steps and one seed."""
    d = load_fuse_config(world / "fuse.yml").model_dump()
    d["train"].update(steps=2, batch_size=4, max_len=64)
    d["seeds"] = [0]
    return FuseConfig.model_validate(d)


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    root = tmp_path_factory.mktemp("micro")
    world = zoo.build_world(root, _micro())
    out = root / "fused"
    report = run_fuse(_cfg(world), out)
    return world, out, report


def test_world_is_cached_and_has_its_recipe(micro):
    world, _, _ = micro
    meta = json.loads((world / "world.json").read_text())
    assert set(meta["training"]) == {"pivot", "source_numbers", "source_records"}
    again = zoo.build_world(world.parent, _micro())
    assert again == world  # keyed by the spec: no rebuild
    cfg = load_fuse_config(world / "fuse.yml")
    assert cfg.pivot == str(world / "pivot") and cfg.data == str(world / "fusion.jsonl")
    kinds = {json.loads((world / m / "config.json").read_text())["model_type"] for m in meta["training"]}
    assert kinds == {"llama", "qwen3", "gpt_neox"}


def test_pipeline_writes_every_candidate_with_recipes(micro):
    world, out, report = micro
    for d in ["target-source_numbers", "target-source_records", "merged", "control"]:
        path = out / "seed-0" / d
        assert (path / "config.json").exists() and (path / "fuseval_recipe.yml").exists(), d
        assert load_tokenizer(path).get_vocab() == load_tokenizer(world / "pivot").get_vocab()
    assert yaml.safe_load((out / "seed-0" / "control" / "fuseval_recipe.yml").read_text())["train"]["lam"] == 1.0
    weights = json.loads((out / "seed-0" / "merged" / "fuseval_merge_weights.json").read_text())
    assert weights  # varm records its per-matrix weights
    saved = json.loads((out / "fuse_report.json").read_text())
    for name in ("source_numbers", "source_records"):
        st = saved["stage1"][name]
        assert 0 < st["transferred_share"] <= 1
        n = sum(sum(c.values()) for c in st["picked"].values())
        assert n == len(load_conversations(world / "fusion.jsonl"))
        # min_ce's weights are one-hot, so a domain's teachers' share is the response tokens of the examples
        # that took the source over the pivot, over all its response tokens: 0 where it never did, 1 where
        # it always did, in between otherwise
        for d, share in st["teacher_token_share"].items():
            picks = st["picked"][d]
            if not picks.get(name):
                assert share == 0.0, (d, share, picks)
            elif not picks.get("pivot"):
                assert share == 1.0, (d, share, picks)
            else:
                assert 0 < share < 1, (d, share, picks)
    assert not list(out.glob("seed-0/.*train"))  # training checkpoints are cleaned up


def test_rerun_reuses_finished_outputs(micro):
    world, out, _ = micro
    before = {p: p.stat().st_mtime_ns for p in out.glob("seed-0/*/model.safetensors")}
    run_fuse(_cfg(world), out)
    assert {p: p.stat().st_mtime_ns for p in out.glob("seed-0/*/model.safetensors")} == before


def test_alignment_transfers_only_same_text_pairs(micro):
    world, out, _ = micro
    convs = load_conversations(world / "fusion.jsonl")[:5]
    p_store, s_store = TeacherStore(out / "teachers" / "pivot"), TeacherStore(out / "teachers" / "source_numbers")
    p_tok, s_tok = load_tokenizer(world / "pivot"), load_tokenizer(world / "source_numbers")
    from fusion import align

    vmap = align.map_vocab(s_tok, p_tok)
    for c in convs:
        p_rec, s_rec = p_store.get(record_key(c)), s_store.get(record_key(c))
        ids, lp, done = align_source(s_rec, s_tok, p_rec, p_tok, vmap, 0)
        # Untransferred rows are the one-hot of the pivot's gold token; transferred rows are distributions.
        assert np.array_equal(ids[~done, 0], p_rec.tokens[~done]) and np.all(lp[~done, 0] == 0)
        assert np.allclose(np.exp(lp[done]).sum(1), 1, atol=1e-5)
        # The end-of-turn marker is a special token: never transferred.
        end = p_tok.convert_tokens_to_ids("<|end|>")
        assert not done[p_rec.tokens == end].any()


def test_empty_responses_and_long_examples_flow_through(micro, tmp_path):
    world, out, _ = micro
    from fusion.conversations import Conversation
    from fusion.distill import extract_teachers

    convs = [Conversation("x", "empty", [{"role": "user", "content": "Say nothing."},
                                         {"role": "assistant", "content": ""}], []),
             Conversation("x", "long", [{"role": "user", "content": "word " * 200},
                                        {"role": "assistant", "content": "ok " * 50}], [])]
    p = extract_teachers(world / "pivot", convs, tmp_path / "p", max_len=128)
    s = extract_teachers(world / "source_numbers", convs, tmp_path / "s", max_len=128)
    assert p.index["truncated"] == 1 and s.index["truncated"] == 1
    examples, stats = fused_examples([convs[0]], world / "pivot", p, [(world / "source_numbers", s)],
                                     load_fuse_config(world / "fuse.yml").fusion, tmp_path)
    assert len(examples[0].resp_pos) == 1  # the empty answer still ends its turn: the end marker is trained


def test_config_errors_name_the_file_and_key(tmp_path, micro):
    world, _, _ = micro
    bad = tmp_path / "fuse.yml"
    bad.write_text(yaml.safe_dump({"pivot": str(world / "pivot"), "sources": [str(world / "source_numbers")],
                                   "data": str(world / "fusion.jsonl"), "trian": {"steps": 1}}))
    with pytest.raises(FusevalError, match=r"fuse\.yml: unknown key 'trian'"):
        load_fuse_config(bad)
    bad.write_text(yaml.safe_dump({"pivot": str(tmp_path), "sources": [str(world / "source_numbers")],
                                   "data": str(world / "fusion.jsonl")}))
    with pytest.raises(FusevalError, match="not a model directory"):
        run_fuse(load_fuse_config(bad), tmp_path / "o")
    pickled = tmp_path / "pickled"  # a .bin-only source: fuse refuses it instead of letting transformers unpickle it
    shutil.copytree(world / "source_numbers", pickled, ignore=shutil.ignore_patterns("*.safetensors"))
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded")
    bad.write_text(yaml.safe_dump({"pivot": str(world / "pivot"), "sources": [str(pickled)],
                                   "data": str(world / "fusion.jsonl")}))
    with pytest.raises(FusevalError, match=r"pickled: no safetensors weights; fuse does not load pickle"):
        run_fuse(load_fuse_config(bad), tmp_path / "o")
    (tmp_path / "d.jsonl").write_text('{"messages": [}\n')
    bad.write_text(yaml.safe_dump({"pivot": str(world / "pivot"), "sources": [str(world / "source_numbers")],
                                   "data": "d.jsonl"}))
    with pytest.raises(FusevalError, match=r"d\.jsonl:1: not a conversation record"):
        run_fuse(load_fuse_config(bad), tmp_path / "o")


def test_cli_reports_a_bad_config_in_one_line(tmp_path):
    cfg = tmp_path / "f.yml"
    cfg.write_text("pivot: p\nsources: [s]\ndata: d.jsonl\nfusion: {function: max_ce}\n")
    r = subprocess.run([sys.executable, "-m", "harness.cli", "fuse", str(cfg), str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert r.returncode == 1
    lines = [ln for ln in r.stdout.splitlines() + r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "f.yml: fusion.function" in lines[0], lines


def test_rerun_with_another_recipe_is_refused(micro):
    world, out, _ = micro
    cfg = _cfg(world).model_dump()
    cfg["train"]["lr"] = 0.123
    with pytest.raises(FusevalError, match="another recipe"):
        run_fuse(FuseConfig.model_validate(cfg), out)


def test_joint_stage1_fuses_every_source_into_one_target_without_a_merge(micro):
    """stage1: joint (FuseLLM's way): one target whose examples take min_ce over the pivot and every source at
    once, the picks matching an independent argmin of the stored CEs; no stage-2 merge; the control as before."""
    from fusion.pipeline import fuse_outputs, fused_output

    world, out, _ = micro
    cfg = _cfg(world).model_copy(update={"stage1": "joint"})
    assert fuse_outputs(cfg) == ["target-joint", "control"] and fused_output(cfg) == "target-joint"
    joint_out = out.parent / "fused-joint"
    report = run_fuse(cfg, joint_out)
    seed = joint_out / "seed-0"
    assert sorted(p.name for p in seed.iterdir() if not p.name.startswith(".")) == ["control", "target-joint"]
    assert load_tokenizer(seed / "target-joint").get_vocab() == load_tokenizer(world / "pivot").get_vocab()
    recipe = yaml.safe_load((seed / "target-joint" / "fuseval_recipe.yml").read_text())
    assert recipe["sources"] == ["source_numbers", "source_records"] and "joint" in recipe["fuseval"]
    assert list(report["stage1"]) == ["joint"]
    convs = load_conversations(world / "fusion.jsonl")
    names = ["pivot", "source_numbers", "source_records"]
    stores = [TeacherStore(joint_out / "teachers" / n) for n in names]
    expected: dict[str, dict[str, int]] = {}
    for c in convs:
        ces = [s.get(record_key(c)).ce for s in stores]
        pick = names[int(np.argmin(ces))]
        expected.setdefault(c.domain, {}).setdefault(pick, 0)
        expected[c.domain][pick] += 1
    assert report["stage1"]["joint"]["picked"] == expected
    with pytest.raises(FusevalError, match="'pivot' and 'joint'"):
        run_fuse(cfg.model_copy(update={"sources": [str(world / "pivot")]}), out.parent / "bad")

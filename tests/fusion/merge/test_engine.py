import json
import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from fusion.common.errors import FusevalError
from fusion.merge import MergeOptions, load_merge_config, parse_merge_config, run_merge
from fusion.merge.params import layer_index


def _load(path):
    out = {}
    for f in sorted(path.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def _cfg(method, base, models, **extra):
    d = {"merge_method": method, "models": [{"model": str(m), "parameters": p} for m, p in models]}
    if base is not None:
        d["base_model"] = str(base)
    d.update(extra)
    return parse_merge_config(d, "test.yml")


def _copy_with(src, dst, edit):
    shutil.copytree(src, dst)
    tensors = load_file(dst / "model.safetensors")
    edit(tensors)
    save_file(tensors, dst / "model.safetensors")
    return dst


def test_linear_merge_end_to_end(tiny_set, tmp_path):
    cfg = _cfg("linear", None, [(tiny_set["variant1"], {"weight": 1.0}), (tiny_set["variant2"], {"weight": 3.0})])
    res = run_merge(cfg, tmp_path / "out")
    a, b, out = _load(tiny_set["variant1"]), _load(tiny_set["variant2"]), _load(tmp_path / "out")
    assert set(out) == set(a) and res.n_tensors == len(a)
    for n in a:
        torch.testing.assert_close(out[n], (a[n] + 3 * b[n]) / 4, rtol=1e-6, atol=1e-7)
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json", "fuseval_recipe.yml"):
        assert (tmp_path / "out" / f).exists(), f


def test_layer_gradient_and_filter(tiny_set, tmp_path):
    weight = [{"filter": "self_attn", "value": [0.0, 1.0]}, {"value": 0.25}]
    cfg = _cfg("task_arithmetic", tiny_set["base"], [(tiny_set["variant1"], {"weight": weight})])
    run_merge(cfg, tmp_path / "out")
    base, v, out = _load(tiny_set["base"]), _load(tiny_set["variant1"]), _load(tmp_path / "out")
    n_layers = 4
    for n in base:
        idx = layer_index(n)
        if "self_attn" in n:
            w = idx / (n_layers - 1)  # gradient 0 -> 1 across layers
        else:
            w = 0.25
        torch.testing.assert_close(out[n], base[n] + w * (v[n] - base[n]), rtol=1e-6, atol=1e-7, msg=n)


def test_out_dtype_sharding_and_transformers_load(tiny_set, tmp_path):
    from transformers import AutoModelForCausalLM

    cfg = _cfg("ties", tiny_set["base"], [(tiny_set["variant1"], {"weight": 1.0, "density": 0.5}),
                                          (tiny_set["variant2"], {"weight": 1.0, "density": 0.5})],
               dtype="float32", out_dtype="bfloat16")
    res = run_merge(cfg, tmp_path / "out", options=MergeOptions(shard_bytes=100_000))
    assert len(res.files) > 1 and (tmp_path / "out" / "model.safetensors.index.json").exists()
    assert all(t.dtype == torch.bfloat16 for t in _load(tmp_path / "out").values())
    cfg_json = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg_json.get("dtype", cfg_json.get("torch_dtype")) == "bfloat16"
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert next(model.parameters()).dtype == torch.bfloat16


def test_recipe_records_seed_and_defaults(tiny_set, tmp_path):
    cfg = _cfg("dare_ties", tiny_set["base"], [(tiny_set["variant1"], {"weight": 1.0, "density": 0.5}),
                                               (tiny_set["variant2"], {"weight": 1.0, "density": 0.5})], seed=42)
    run_merge(cfg, tmp_path / "a")
    run_merge(cfg, tmp_path / "b")
    recipe = yaml.safe_load((tmp_path / "a" / "fuseval_recipe.yml").read_text())
    assert recipe["resolved"]["seed"] == 42
    assert recipe["resolved"]["global_parameters"]["rescale"] == "density"
    assert [i["role"] for i in recipe["inputs"]] == ["base", "model", "model"]
    a, b = _load(tmp_path / "a"), _load(tmp_path / "b")
    assert all(torch.equal(a[n], b[n]) for n in a)  # same seed, same tensors
    run_merge(cfg.model_copy(update={"seed": 43}), tmp_path / "c")
    c = _load(tmp_path / "c")
    assert any(not torch.equal(a[n], c[n]) for n in a)


def test_varm_writes_weight_diagnostics(tiny_set, tmp_path):
    cfg = _cfg("varm", tiny_set["base"], [(tiny_set["variant1"], {}), (tiny_set["variant2"], {})])
    run_merge(cfg, tmp_path / "out")
    weights = json.loads((tmp_path / "out" / "fuseval_merge_weights.json").read_text())
    base, a, b = _load(tiny_set["base"]), _load(tiny_set["variant1"]), _load(tiny_set["variant2"])
    name = "model.layers.0.mlp.up_proj.weight"
    ra = float(((a[name] - base[name]).double() ** 2).mean())
    rb = float(((b[name] - base[name]).double() ** 2).mean())
    assert weights[name]["weights"] == pytest.approx([ra / (ra + rb), rb / (ra + rb)], rel=1e-9)


# ---- bad input ----

def test_shape_mismatch_names_first_tensor(tiny_set, tmp_path):
    bad = _copy_with(tiny_set["variant1"], tmp_path / "bad",
                     lambda t: t.__setitem__("model.layers.1.mlp.up_proj.weight", torch.zeros(3, 3)))
    cfg = _cfg("linear", None, [(tiny_set["variant2"], {"weight": 1.0}), (bad, {"weight": 1.0})])
    with pytest.raises(FusevalError, match=r"bad: tensor 'model.layers.1.mlp.up_proj.weight' has shape \(3, 3\)"):
        run_merge(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_tensor_is_named(tiny_set, tmp_path):
    bad = _copy_with(tiny_set["variant1"], tmp_path / "bad", lambda t: t.pop("model.norm.weight"))
    cfg = _cfg("ties", tiny_set["base"], [(bad, {"weight": 1.0})])
    with pytest.raises(FusevalError, match="tensor 'model.norm.weight' is missing"):
        run_merge(cfg, tmp_path / "out")


def test_architecture_mismatch(tiny_set, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_set["variant1"], bad)
    c = json.loads((bad / "config.json").read_text())
    c["architectures"], c["model_type"] = ["Qwen2ForCausalLM"], "qwen2"
    (bad / "config.json").write_text(json.dumps(c))
    cfg = _cfg("ties", tiny_set["base"], [(bad, {"weight": 1.0})])
    with pytest.raises(FusevalError, match="architecture Qwen2ForCausalLM differs"):
        run_merge(cfg, tmp_path / "out")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_or_inf_input(tiny_set, tmp_path, value):
    def poison(t):
        t["model.layers.2.self_attn.k_proj.weight"][0, 0] = value

    bad = _copy_with(tiny_set["variant1"], tmp_path / "bad", poison)
    cfg = _cfg("linear", None, [(tiny_set["variant2"], {"weight": 1.0}), (bad, {"weight": 1.0})])
    with pytest.raises(FusevalError, match="bad: tensor 'model.layers.2.self_attn.k_proj.weight' contains NaN or Inf"):
        run_merge(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_crash_half_way_leaves_nothing_that_looks_complete(tiny_set, tmp_path, monkeypatch):
    from fusion.merge.base import METHODS, MergeMethod
    from fusion.merge.registry import get_method

    method = get_method("linear")
    calls = {"n": 0}

    def exploding(*args):
        calls["n"] += 1
        if calls["n"] == 10:
            raise RuntimeError("simulated crash")
        return method.fn(*args)

    monkeypatch.setitem(METHODS, "linear", MergeMethod(**{**method.__dict__, "fn": exploding}))
    cfg = _cfg("linear", None, [(tiny_set["variant1"], {"weight": 1.0}), (tiny_set["variant2"], {"weight": 1.0})])
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_merge(cfg, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []  # neither the output nor a hidden partial remains


def test_existing_output_refused_unless_force(tiny_set, tmp_path):
    cfg = _cfg("linear", None, [(tiny_set["variant1"], {"weight": 1.0})])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(FusevalError, match="exists; pass --force"):
        run_merge(cfg, tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    run_merge(cfg, tmp_path / "out", options=MergeOptions(force=True))
    assert (tmp_path / "out" / "model.safetensors").exists() and not (tmp_path / "out" / "keep.txt").exists()


def test_output_cannot_be_an_input(tiny_set, tmp_path):
    victim = tmp_path / "v"
    shutil.copytree(tiny_set["variant1"], victim)
    cfg = _cfg("linear", None, [(victim, {"weight": 1.0})])
    with pytest.raises(FusevalError, match="output directory is one of the input models"):
        run_merge(cfg, victim, options=MergeOptions(force=True))


@pytest.mark.parametrize("data, message", [
    ({"merge_method": "linear", "models": [{"model": "x", "parameters": {"weight": 1}}], "modles": []},
     "unknown key 'modles'"),
    ({"merge_method": "linearr", "models": [{"model": "x"}]}, "unknown merge_method 'linearr'"),
    ({"merge_method": "ties", "base_model": "b",
      "models": [{"model": "x", "parameters": {"weight": 1, "densty": 0.5}}]},
     r"unknown parameter 'models\[0\].parameters.densty' for ties"),
    ({"merge_method": "ties", "base_model": "b", "models": [{"model": "x", "parameters": {"weight": 1}}],
      "parameters": {"lamda": 1}},
     "unknown parameter 'parameters.lamda'"),
    ({"merge_method": "ties", "models": [{"model": "x", "parameters": {"weight": 1}}]}, "needs 'base_model'"),
    ({"merge_method": "slerp", "base_model": "b", "models": [{"model": "x"}, {"model": "y"}], "parameters": {"t": 0.5}},
     "slerp takes 1 model"),
    ({"merge_method": "linear", "models": [{"model": "x", "extra": 1}]}, r"unknown key 'models.0.extra'"),
    ({"merge_method": "linear", "models": "x"}, "models: Input should be a valid list"),
])
def test_config_errors_name_file_and_key(data, message, write_yaml):
    path = write_yaml(data)
    with pytest.raises(FusevalError, match=message) as e:
        load_merge_config(path)
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)


def test_malformed_yaml_and_missing_file(write_yaml, tmp_path):
    path = write_yaml("merge_method: linear\nmodels: [\n")
    with pytest.raises(FusevalError, match=r"merge.yml: malformed YAML at line \d"):
        load_merge_config(path)
    with pytest.raises(FusevalError, match="nope.yml: config file not found"):
        load_merge_config(tmp_path / "nope.yml")


def test_missing_required_parameter_is_named(tiny_set, tmp_path):
    cfg = _cfg("ties", tiny_set["base"], [(tiny_set["variant1"], {"density": 0.5})])
    with pytest.raises(FusevalError, match="missing parameter 'weight'"):
        run_merge(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_mergekit_style_global_defaults_and_unlisted_base_for_linear(tiny_set, tmp_path):
    # global `weight` applies to every model; for linear an unlisted base_model is one more input (as mergekit)
    cfg = _cfg("linear", tiny_set["base"], [(tiny_set["variant1"], {})], parameters={"weight": 1.0})
    run_merge(cfg, tmp_path / "out")
    base, v, out = _load(tiny_set["base"]), _load(tiny_set["variant1"]), _load(tmp_path / "out")
    for n in base:
        torch.testing.assert_close(out[n], (base[n] + v[n]) / 2, rtol=1e-6, atol=1e-7)


def test_lambda_key_is_accepted_and_applied(tiny_set, tmp_path, write_yaml):
    cfg = load_merge_config(write_yaml({
        "merge_method": "task_arithmetic", "base_model": str(tiny_set["base"]),
        "models": [{"model": str(tiny_set["variant1"]), "parameters": {"weight": 1.0}}],
        "parameters": {"lambda": 0.5}}))
    run_merge(cfg, tmp_path / "out")
    base, v, out = _load(tiny_set["base"]), _load(tiny_set["variant1"]), _load(tmp_path / "out")
    n = "model.layers.1.mlp.down_proj.weight"
    torch.testing.assert_close(out[n], base[n] + 0.5 * (v[n] - base[n]), rtol=1e-6, atol=1e-7)


# --- Elementwise methods stream tensors in tasks of blocks (streaming.TASK_NUMEL, streaming.BLOCK_NUMEL),
# merged by parallel lanes into the writer's staging ring; the result must not depend on any of it.

def _small_blocks(monkeypatch, lanes=None):
    """Blocks of 1000 elements in tasks of 2500 (so most tasks end in a partial block), staging
    chunks of 16 KiB (so the ring wraps often and tasks are cut where it does)."""
    from fusion.io import stream
    from fusion.merge import pipeline, streaming

    monkeypatch.setattr(streaming, "BLOCK_NUMEL", 1000)
    monkeypatch.setattr(streaming, "TASK_NUMEL", 2500)
    monkeypatch.setattr(stream, "STAGE_BYTES", 16384)
    if lanes is not None:
        monkeypatch.setattr(pipeline, "lanes", lambda: lanes)


def _whole_tensor_method(monkeypatch, name):
    """Make `name` run on whole tensors, as non-elementwise methods do."""
    import dataclasses

    from fusion.merge.base import METHODS
    from fusion.merge.registry import get_method

    monkeypatch.setitem(METHODS, name, dataclasses.replace(get_method(name), elementwise=False))


@pytest.mark.parametrize("method, weights, extra", [
    ("linear", [0.3, 0.9], {}),
    ("linear", [0.5, 0.5], {"parameters": {"normalize": False}}),
    ("task_arithmetic", [0.7, -0.4], {"parameters": {"lambda": 0.8}}),
])
@pytest.mark.parametrize("dtypes", [{"dtype": "float32", "out_dtype": "bfloat16"}, {"dtype": "bfloat16"}, {}])
@pytest.mark.parametrize("lanes, direct", [(3, True), (1, False)])
def test_blocks_give_the_whole_tensor_result_bit_for_bit(tiny_set, tmp_path, monkeypatch, method, weights, extra,
                                                         dtypes, lanes, direct):
    base = tiny_set["base"] if method == "task_arithmetic" else None
    models = [(tiny_set[f"variant{i + 1}"], {"weight": w}) for i, w in enumerate(weights)]
    cfg = _cfg(method, base, models, **extra, **dtypes)
    sizes = {n: t.numel() for n, t in _load(tiny_set["base"]).items()}
    _small_blocks(monkeypatch, lanes)  # 3 lanes on a 2-core machine: tasks finish out of order
    assert sum(n > 2500 for n in sizes.values()) >= 5 and any(n % 1000 for n in sizes.values() if n > 2500)
    options = MergeOptions(shard_bytes=200_000, direct_writes=direct)  # tasks stream into 3+ files
    run_merge(cfg, tmp_path / "blocks", options=options)
    _whole_tensor_method(monkeypatch, method)
    run_merge(cfg, tmp_path / "whole", options=MergeOptions(shard_bytes=200_000, direct_writes=False))
    files = sorted(p.name for p in (tmp_path / "whole").glob("*.safetensors"))
    assert len(files) >= 3
    for f in files:
        assert (tmp_path / "blocks" / f).read_bytes() == (tmp_path / "whole" / f).read_bytes(), f


def test_whole_tensors_between_streamed_ones(tiny_set, tmp_path, monkeypatch):
    # Tensors that are not merged (integers: copied from the first model) go through the writer
    # thread before, between and after tasks that stream through the ring; every byte must still
    # land in place. The inputs are written in that order (safetensors' save_file would sort).
    from fusion.io import ShardedWriter

    def with_ids(src, dst):
        shutil.copytree(src, dst)
        t = load_file(dst / "model.safetensors")
        names = list(t)
        for at, n in ((len(names), "z.ids"), (len(names) // 2, "m.ids"), (0, "a.ids")):
            t[n] = torch.arange(4099 + at, dtype=torch.int64)
            names.insert(at, n)
        (dst / "model.safetensors").unlink()
        with ShardedWriter(dst, [(n, tuple(t[n].shape), t[n].dtype) for n in names], direct=False) as w:
            for n in names:
                w.write(n, t[n])
            w.finish()
        return dst

    v1, v2 = with_ids(tiny_set["variant1"], tmp_path / "v1"), with_ids(tiny_set["variant2"], tmp_path / "v2")
    cfg = _cfg("linear", None, [(v1, {"weight": 0.3}), (v2, {"weight": 0.9})], dtype="float32", out_dtype="bfloat16")
    _small_blocks(monkeypatch, lanes=2)
    run_merge(cfg, tmp_path / "blocks")
    _whole_tensor_method(monkeypatch, "linear")
    run_merge(cfg, tmp_path / "whole", options=MergeOptions(direct_writes=False))
    blocks, whole = (tmp_path / d / "model.safetensors" for d in ("blocks", "whole"))
    assert blocks.read_bytes() == whole.read_bytes()
    out = _load(tmp_path / "blocks")
    ids = ("a.ids", "m.ids", "z.ids")
    assert [torch.equal(out[n], load_file(v1 / "model.safetensors")[n]) for n in ids] == [True] * 3


def test_linear_rounds_as_mergekit_does(tiny_set, tmp_path, monkeypatch):
    # (w * φ).sum(0) / Σw in float32, every product rounded on its own (no fused multiply-add),
    # then rounded once to bfloat16: computed here in numpy, and equal to the bit.
    import numpy as np

    _small_blocks(monkeypatch)
    w = np.array([0.3, 0.9], dtype=np.float32)
    cfg = _cfg("linear", None, [(tiny_set["variant1"], {"weight": 0.3}), (tiny_set["variant2"], {"weight": 0.9})],
               dtype="float32", out_dtype="bfloat16")
    run_merge(cfg, tmp_path / "out")
    a, b, out = _load(tiny_set["variant1"]), _load(tiny_set["variant2"]), _load(tmp_path / "out")
    for n in a:
        x, y = a[n].float().numpy(), b[n].float().numpy()
        want = ((x * w[0]) + (y * w[1])) / (w[0] + w[1])
        assert torch.equal(out[n], torch.from_numpy(want).to(torch.bfloat16)), n


@pytest.mark.parametrize("where", ["first block", "last block"])
def test_nan_in_a_later_block_names_the_input(tiny_set, tmp_path, monkeypatch, where):
    _small_blocks(monkeypatch)
    name = max(_load(tiny_set["variant2"]).items(), key=lambda kv: kv[1].numel())[0]

    def poison(t):
        t[name].view(-1)[0 if where == "first block" else -1] = float("nan")

    bad = _copy_with(tiny_set["variant2"], tmp_path / "bad", poison)
    cfg = _cfg("linear", None, [(tiny_set["variant1"], {"weight": 1.0}), (bad, {"weight": 1.0})])
    with pytest.raises(FusevalError, match=rf"bad: tensor '{name}' contains NaN or Inf"):
        run_merge(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_block_result_too_large_for_the_written_dtype(tiny_set, tmp_path, monkeypatch):
    _small_blocks(monkeypatch)
    name = max(_load(tiny_set["variant1"]).items(), key=lambda kv: kv[1].numel())[0]
    big = _copy_with(tiny_set["variant1"], tmp_path / "big", lambda t: t[name].view(-1).__setitem__(-1, 60000.0))
    cfg = _cfg("linear", None, [(big, {"weight": 1.0}), (big, {"weight": 1.0})], parameters={"normalize": False},
               dtype="float32", out_dtype="float16")
    with pytest.raises(FusevalError, match=rf"tensor '{name}' exceeds the range of float16"):
        run_merge(cfg, tmp_path / "out")


def test_merges_leave_torch_threads_alone(tiny_set, tmp_path, monkeypatch):
    # A merge that called torch.set_num_threads (to split cores between its threads) left the
    # process with torch ops ~100x slower once a numba kernel (TIES) had run: their OpenMP teams
    # collided. So no merge may touch the thread count; the merge lanes set their own team size
    # only, and it goes with them.
    import threading

    calls = []
    before = torch.get_num_threads()
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    models = [(tiny_set[v], {"weight": 1.0, "density": 0.5}) for v in ("variant1", "variant2")]
    run_merge(_cfg("linear", None, [(m, {"weight": 1.0}) for m, _ in models]), tmp_path / "linear")
    run_merge(_cfg("ties", tiny_set["base"], models), tmp_path / "ties")
    assert calls == []
    seen = []
    t = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    t.start(), t.join()
    assert torch.get_num_threads() == before and seen == [before]

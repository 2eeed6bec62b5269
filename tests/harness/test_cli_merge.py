"""`fuseval merge` end to end, as a user runs it: a subprocess, exit codes, one-line errors."""

import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

ALL_METHODS = {
    "linear": ({"weight": 0.5}, {"weight": 0.5}, {}),
    "task_arithmetic": ({"weight": 0.5}, {"weight": 0.5}, {}),
    "ties": ({"weight": 1.0, "density": 0.5}, {"weight": 1.0, "density": 0.5}, {}),
    "dare_linear": ({"weight": 1.0, "density": 0.5}, {"weight": 1.0, "density": 0.5}, {}),
    "dare_ties": ({"weight": 1.0, "density": 0.5}, {"weight": 1.0, "density": 0.5}, {}),
    "breadcrumbs": ({"weight": 1.0, "density": 0.5}, {"weight": 1.0, "density": 0.5}, {}),
    "breadcrumbs_ties": ({"weight": 1.0, "density": 0.5, "gamma": 0.02}, {"weight": 1.0, "density": 0.5}, {}),
    "della": ({"weight": 1.0, "density": 0.5}, {"weight": 1.0, "density": 0.5}, {}),
    "della_linear": ({"weight": 1.0, "density": 0.5, "epsilon": 0.1}, {"weight": 1.0, "density": 0.5}, {}),
    "slerp": ({}, None, {"t": [0.0, 0.5, 1.0]}),
    "model_stock": ({}, {}, {}),
    "sce": ({}, {}, {"select_topk": 0.5}),
    "varm": ({}, {}, {}),
}


def fuseval(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "harness.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def _config(method, tiny_set):
    p1, p2, glob = ALL_METHODS[method]
    models = [{"model": str(tiny_set["variant1"]), "parameters": p1}]
    if p2 is not None:
        models.append({"model": str(tiny_set["variant2"]), "parameters": p2})
    cfg = {"merge_method": method, "models": models}
    if method != "linear":
        cfg["base_model"] = str(tiny_set["base"])
    if glob:
        cfg["parameters"] = glob
    return cfg


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(ALL_METHODS))
def test_cli_merge_loads_and_generates(method, tiny_set, tmp_path, write_yaml):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = write_yaml(_config(method, tiny_set))
    out = tmp_path / "merged"
    r = fuseval("merge", cfg, out, "--dtype", "bfloat16")
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stderr and "fuseval_recipe.yml" in r.stderr
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok.apply_chat_template([{"role": "user", "content": "hello"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)["input_ids"]
    gen = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert gen.shape[1] == ids.shape[1] + 4
    assert next(model.parameters()).dtype == torch.bfloat16


def test_cli_shard_size_and_force(tiny_set, tmp_path, write_yaml):
    cfg = write_yaml(_config("ties", tiny_set))
    out = tmp_path / "m"
    assert fuseval("merge", cfg, out, "--shard-size", "200KB").returncode == 0
    assert len(list(out.glob("model-*-of-*.safetensors"))) > 1
    r = fuseval("merge", cfg, out)
    assert r.returncode == 1 and "exists; pass --force" in r.stderr
    assert fuseval("merge", cfg, out, "--force").returncode == 0


@pytest.mark.parametrize("method", ["linear", "ties"])
def test_cli_buffered_writes_write_the_same_bytes(method, tiny_set, tmp_path, write_yaml):
    cfg = write_yaml(_config(method, tiny_set))
    for flag in ("--direct-writes", "--buffered-writes"):
        r = fuseval("merge", cfg, tmp_path / flag, "--shard-size", "200KB", flag)
        assert r.returncode == 0, r.stderr
    files = sorted(p.name for p in (tmp_path / "--direct-writes").glob("*.safetensors"))
    assert len(files) > 1
    for f in files:
        assert (tmp_path / "--direct-writes" / f).read_bytes() == (tmp_path / "--buffered-writes" / f).read_bytes(), f


def _assert_one_line_error(r, *fragments):
    assert r.returncode == 1, (r.returncode, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error:") and "Traceback" not in r.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def test_cli_bad_inputs_one_line_errors(tiny_set, tmp_path, write_yaml):
    cfg = write_yaml({"merge_method": "ties", "base_model": str(tiny_set["base"]), "modelz": []}, "typo.yml")
    _assert_one_line_error(fuseval("merge", cfg, tmp_path / "o"), "typo.yml", "unknown key 'modelz'")

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    torch.save({"w": torch.zeros(2)}, pickled / "pytorch_model.bin")
    cfg = write_yaml({"merge_method": "linear", "models": [{"model": str(pickled), "parameters": {"weight": 1}}]},
                     "p.yml")
    _assert_one_line_error(fuseval("merge", cfg, tmp_path / "o"), "pytorch_model.bin", "--allow-pickle")
    r = fuseval("merge", cfg, tmp_path / "o", "--allow-pickle")
    assert r.returncode == 0, r.stderr

    sharded = tmp_path / "sharded"
    sharded.mkdir()
    save_file({"w": torch.zeros(2)}, sharded / "model-00001-of-00002.safetensors")
    (sharded / "model.safetensors.index.json").write_text(
        '{"weight_map": {"w": "model-00001-of-00002.safetensors", "v": "model-00002-of-00002.safetensors"}}')
    cfg = write_yaml({"merge_method": "linear", "models": [{"model": str(sharded), "parameters": {"weight": 1}}]},
                     "s.yml")
    _assert_one_line_error(fuseval("merge", cfg, tmp_path / "o2"), "model-00002-of-00002.safetensors", "missing")

    cfg = write_yaml({"merge_method": "linear",
                      "models": [{"model": str(tmp_path / "nowhere"), "parameters": {"weight": 1}}]}, "n.yml")
    _assert_one_line_error(fuseval("merge", cfg, tmp_path / "o3"), "nowhere: model directory not found")
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()


def test_cli_debug_shows_traceback(tmp_path, write_yaml):
    cfg = write_yaml({"merge_method": "nope", "models": []})
    r = fuseval("--debug", "merge", cfg, tmp_path / "o")
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_cli_help_lists_options():
    r = fuseval("merge", "--help")
    assert r.returncode == 0
    for opt in ("--dtype", "--shard-size", "--allow-pickle", "--device", "--force", "--seed"):
        assert opt in r.stdout

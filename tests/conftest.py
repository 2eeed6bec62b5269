from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_set(tmp_path_factory) -> dict[str, Path]:
    """A tiny Llama base and two fine-tuned-like variants, built once per test session."""
    from fusion.zoo import merge_set

    return merge_set(tmp_path_factory.mktemp("zoo"), size="tiny", n_variants=2, seed=0)


@pytest.fixture
def write_yaml(tmp_path):
    def write(data, name: str = "merge.yml") -> Path:
        p = tmp_path / name
        p.write_text(yaml.safe_dump(data, sort_keys=False) if not isinstance(data, str) else data)
        return p

    return write


WORKSPACE = Path(os.environ.get("FUSEVAL_WORKSPACE", Path(__file__).resolve().parents[1] / "runs"))


@pytest.fixture(scope="session")
def world() -> Path:
    """The embedded tiny world (trained pivot and sources), cached under $FUSEVAL_WORKSPACE (default runs/)."""
    from fusion import zoo

    return zoo.build_world(WORKSPACE / "world")


@pytest.fixture(scope="session")
def judge_dir(world, tmp_path_factory) -> Path:
    """The world's pivot with room for judge prompts (~800 tokens of its character-level vocabulary).

    Its grades mean nothing; tests use it to check the path a judgment travels.
    """
    import json
    import shutil

    d = tmp_path_factory.mktemp("judge") / "tiny-judge"
    shutil.copytree(world / "pivot", d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["max_position_embeddings"] = 2048
    (d / "config.json").write_text(json.dumps(cfg))
    return d


@pytest.fixture
def stub():
    """The stub OpenAI-compatible server (tests/harness/stub_openai.py) on 127.0.0.1 and a free port:
    (base_url, state); stopped afterwards."""
    import threading

    from tests.harness.stub_openai import serve

    server, state = serve("127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address
    yield f"http://{host}:{port}/v1", state
    server.shutdown()
    server.server_close()


def pytest_terminal_summary(terminalreporter):
    faults = sys.modules.get("tests.faults.conftest")
    if faults is not None:
        faults.report(terminalreporter)

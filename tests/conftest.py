from __future__ import annotations

import os
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

import subprocess
import sys

import pytest
import yaml


@pytest.mark.slow
def test_demo_runs_every_method_end_to_end(tmp_path):
    from harness.demo import DEMO_RECIPES

    r = subprocess.run([sys.executable, "-m", "harness.cli", "demo", "--workspace", str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    for method in DEMO_RECIPES:
        out = tmp_path / "merged" / method
        assert (out / "model.safetensors").exists(), method
        recipe = yaml.safe_load((out / "fuseval_recipe.yml").read_text())
        assert recipe["resolved"]["merge_method"] == method
        assert method in r.stdout + r.stderr
    # a second run reuses the cached zoo and replaces the merges
    r2 = subprocess.run([sys.executable, "-m", "harness.cli", "demo", "--workspace", str(tmp_path)],
                        capture_output=True, text=True, timeout=600)
    assert r2.returncode == 0, r2.stderr

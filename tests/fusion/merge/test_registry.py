"""The method table: complete as soon as `fusion.merge` is imported, before any lookup."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
ALL_METHODS = {"linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "breadcrumbs", "breadcrumbs_ties",
               "della", "della_linear", "slerp", "model_stock", "sce", "varm"}


def test_methods_are_registered_on_import():
    # In a fresh interpreter: in this one, earlier tests have imported every method module already.
    code = "import fusion.merge; print(' '.join(sorted(fusion.merge.METHODS)))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert set(r.stdout.split()) == ALL_METHODS


def test_every_method_has_its_module_and_a_description():
    from fusion.merge import METHODS

    for name, method in METHODS.items():
        assert method.name == name and method.description, name
        assert method.fn.__module__.startswith("fusion.merge."), name

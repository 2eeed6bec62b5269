# Self-bootstrapping entry points: `make demo`, `make test`, `make bench`.
# The virtual environment is created on first use and reused while pyproject.toml is unchanged.
PYTHON ?= python3.11
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fuseval-installed

.PHONY: demo test bench venv clean

venv: $(STAMP)

# pip finds the CPU torch wheel through this machine's pip configuration (PIP_FIND_LINKS);
# installing it first keeps the resolver from pulling a multi-GB CUDA build for `torch>=2.4`.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==$(TORCH_VERSION)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/fuseval demo --workspace runs/demo

# pytest exits 5 when it collects no tests; that is not a failure of the code under test.
test: $(STAMP)
	$(PY) -m pytest -q tests; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

bench: $(STAMP)
	$(PY) benchmarks/perf/run_all.py

clean:
	rm -rf $(VENV) runs/demo

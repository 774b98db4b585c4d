# Two commands on a fresh machine: `make run` (the quickstart sweep) and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
# Tests in parallel processes (pytest-xdist), one per core up to four; tests that share the Slurm cluster
# carry xdist_group("slurm") and run one after another in one of them.
PARALLEL := -n auto --maxprocesses 4 --dist loadgroup

.PHONY: run test test-exhaustive test-fast venv complexity bench clean mini pretrained gpu-check gpu-wheels

# pip quiet: no "Collecting ..." or progress lines, only its warnings and errors; its whole output goes to
# $(VENV)/pip.log (a conflict's explanation, for one, is not an error line). A failed install prints pip's
# error and stops make before the sweep; .installed is written only after a full install.
PIP := $(PY) -m pip install --quiet --disable-pip-version-check --log $(VENV)/pip.log
PIP_FAILED := { echo "make: pip failed (its error above; its whole output in $(VENV)/pip.log)" >&2; exit 1; }

$(VENV)/.installed: requirements.txt
	@echo "Installing requirements.txt into $(VENV) (a few minutes the first time; pip shows only errors)"
	@$(PYTHON) -m venv $(VENV)
	@$(PIP) --upgrade pip || $(PIP_FAILED)
	@$(PIP) -r requirements.txt || $(PIP_FAILED)
	@touch $@
	@echo "$(VENV) ready"

venv: $(VENV)/.installed

run: venv
	$(PY) sweep.py $(ARGS)

# The CPU mini-protocol (about an hour on 2 cores; README "Experiments"), as a lambda ladder.
mini: venv
	$(PY) sweep.py --ladder experiment=mini $(ARGS)

# The quickstart's base checkpoints (pretrained/) from a finished mini-protocol: each model's point at 0.0067.
pretrained: venv
	$(PY) -m codec.pretrained outputs/mini --lmbda 0.0067

# The suite, slow tests included (CI runs this).
test: venv
	$(PY) -m pytest $(PARALLEL) -m "not exhaustive" $(ARGS)

# A release check: the suite and the full matrices (every kill point alone for every model, every step).
test-exhaustive: venv
	$(PY) -m pytest $(PARALLEL) -m "" $(ARGS)

# The fast tests only (a quick check while developing).
test-fast: venv
	$(PY) -m pytest $(PARALLEL) $(ARGS)

complexity: venv
	$(PY) -m codec.complexity --kodak

# Training throughput, evaluation time, serial decoding and peak memory, each against CompressAI's
# own loop where there is one; prints the tables of benchmarks/README.md (about 15 minutes on 2 cores).
bench: venv
	$(PY) benchmarks/run_all.py $(ARGS)

# The GPU check (benchmarks/gpu_check.py: throughput vs CompressAI's loop, MFU, data feeding, CUDA
# correctness and cross-device bitstreams, launch paths, fp32/bf16 RD): about six minutes on one GPU, figures
# in benchmarks/gpu/. `make gpu-check DEVICE=cpu QUICK=1` is its CPU smoke run (the test suite runs it).
# On a GPU machine without a package registry and without .venv it runs the machine's python3 with the
# wheels `make gpu-wheels` put in .whl/ (carry that folder along).
gpu-check:
	DEVICE=$(DEVICE) QUICK=$(QUICK) OUT=$(OUT) ARGS="$(ARGS)" bash benchmarks/gpu_check.sh

gpu-wheels: venv
	$(PY) benchmarks/gpu_wheels.py

clean:
	rm -rf $(VENV) .pytest_cache

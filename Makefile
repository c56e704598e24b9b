# Two commands for a fresh machine: `make demo` and `make test`.
# Each creates (or updates, when pyproject.toml changes) a virtualenv in .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test parity clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e '.[test,demo]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/jaxcls demo

# Two worker processes, one test file each at a time (module fixtures are built once): most
# of a test's time is tracing and XLA's single-threaded passes, so one process keeps about
# 1.3 of 2 cores busy. Measured with two workers (581 tests) and a cold compile cache on a
# 2-core Intel Xeon (2026-12-06): 5 min 45 s to 6 min 10 s in a quiet hour, 6:45 to 8:05 in
# a busy one (when one probe compile took 25% more CPU; both cores busy throughout; three
# workers: 6:29); warm: 2:50 to 3:40. On a 2-core AMD EPYC (2026-12-07): 10:15 to 13:22
# cold, 4:41 warm. xdist hands out the files with the most tests first; running the slowest
# first instead gained nothing (6:05 vs 6:07). bench/suite_cpu.py shows where the time goes.
# TEST_WORKERS=0 runs everything in this process.
TEST_WORKERS ?= 2

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# torchvision parity (optional): a second venv with torch next to jaxcls.
.venv-torch/.installed: pyproject.toml
	$(PYTHON) -m venv .venv-torch
	.venv-torch/bin/pip install torch==2.14.1 torchvision==0.29.1 safetensors
	.venv-torch/bin/pip install -e '.[test]'
	touch $@

parity: .venv-torch/.installed
	.venv-torch/bin/python -m pytest -q tests/models/test_parity.py

clean:
	rm -rf $(VENV) .venv-torch

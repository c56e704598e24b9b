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
# 1.3 of 2 cores busy. Measured with two workers (582 tests) on a 2-core AMD EPYC
# (2026-12-07): 5:12 with a cold compile cache (4:43 to 5:31 in three `bash .ci/run`s on
# clean clones, 5:31 to 6:17 with the install), 4:00 warm, since the tests compile with the
# XLA flags in tests/conftest.py (10:15 to 13:22 cold before them; 5:45 to 8:05 on a 2-core
# Intel Xeon the day before). xdist hands out the files with the most tests first; running
# the slowest first instead gained nothing (6:05 vs 6:07). bench/suite_cpu.py shows where
# the time goes. TEST_WORKERS=0 runs everything in this process.
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

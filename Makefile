# `make demo` and `make test` each set up .venv (if needed) and then run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast lint typecheck clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch is pinned to 2.13.0 in pyproject.toml; installing it first keeps pip on the CPU build.
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	# the openvino extra too, so the OpenVINO backend is tested
	$(BIN)/python -m pip install --quiet -e ".[dev,openvino]"
	touch $(STAMP)

setup: $(STAMP)

# The whole workflow on the built-in synthetic dataset (synth -> ... -> predict), a few minutes on 2 cores.
demo: $(STAMP)
	$(BIN)/stnet demo --control

test: $(STAMP)
	$(BIN)/python -m pytest -q

# the fast loop: everything but the end-to-end demo, bench and torchrun tests
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

# mypy on src/stnet, configured in pyproject.toml
typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build src/*.egg-info

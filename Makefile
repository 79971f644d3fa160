# Everything installs into .venv; torch is pinned to the CPU build that lies on these machines.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo kernel-demo test lint bench docs clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q transformers==5.23.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

kernel-demo: $(STAMP)
	$(BIN)/python examples/kernel_demo.py

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 tests

lint: $(STAMP)
	$(BIN)/ruff check isa runtime_emu dojoc tests benchmarks examples
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/emu_speed.py
	$(BIN)/python benchmarks/microbench.py
	$(BIN)/python benchmarks/models.py
	$(BIN)/python benchmarks/targets.py --write

docs: $(STAMP)
	$(BIN)/python -m isa.docgen > docs/isa.md

clean:
	rm -rf $(VENV) build *.egg-info

# Two entry points: `make reproduce` (figures + report from shipped checkpoints) and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MPLBACKEND := Agg
export TOKENIZERS_PARALLELISM := false

.PHONY: test reproduce install lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# torch first, pinned to the CPU wheel on disk; the project's range admits it, so pip keeps it.
$(STAMP): $(BIN)/python pyproject.toml
	@echo "Installing torch==2.13.0 (CPU) ..."; $(BIN)/pip install --disable-pip-version-check torch==2.13.0 > $(VENV)/install.log 2>&1 || (cat $(VENV)/install.log; exit 1)
	@echo "Installing the project and its dev extra ..."; $(BIN)/pip install --disable-pip-version-check -e ".[dev]" >> $(VENV)/install.log 2>&1 || (cat $(VENV)/install.log; exit 1)
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

reproduce: $(STAMP)
	$(BIN)/interp reproduce all

lint: $(STAMP)
	$(BIN)/ruff check interp patching probes tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache

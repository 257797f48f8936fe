# The README's two commands: `make train` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: install train test test-all lint format clean notebooks browser

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## train and test a model on the embedded synthetic set (CPU, a few minutes); ARGS= adds overrides
train: $(STAMP)
	$(BIN)/dermlit-train $(ARGS)

## the fast test tier (no `slow` tests)
test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(ARGS)

## every test, slow ones included
test-all: $(STAMP)
	$(BIN)/python -m pytest $(ARGS)

## headless Chromium (Debian's package) for the slow browser tests of tests/test_browser.py
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y chromium; }
	chromium --version

lint: $(STAMP)
	$(BIN)/ruff check dermlit tests benchmarks notebooks
	$(BIN)/ruff format --check dermlit tests benchmarks notebooks

format: $(STAMP)
	$(BIN)/ruff check --fix dermlit tests benchmarks notebooks
	$(BIN)/ruff format dermlit tests benchmarks notebooks

clean:
	rm -rf outputs .cache .pytest_cache .ruff_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

## execute notebooks/*.py (jupytext) on the real data; writes notebooks/*.html (git-ignored).
## 02 analyses DERMLIT_SWEEP_DIR or the newest outputs/multiruns/ folder, and is skipped without one.
NB_STAMP := $(VENV)/.installed-notebooks
NB_RUN = $(BIN)/jupytext --to notebook --execute notebooks/$(1).py \
	&& $(BIN)/jupyter nbconvert --to html notebooks/$(1).ipynb

$(NB_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,notebooks]'
	touch $(NB_STAMP)

notebooks: $(NB_STAMP)
	$(call NB_RUN,01_explore_ham10000)
	@if [ -n "$$DERMLIT_SWEEP_DIR" ] || ls -d "$${DERMLIT_OUTPUT:-outputs}"/multiruns/*/ >/dev/null 2>&1; then \
		$(call NB_RUN,02_sweep_analysis); \
	else \
		echo "notebooks: SKIPPED 02_sweep_analysis: no multirun directory in $${DERMLIT_OUTPUT:-outputs}/multiruns/;" \
			"run a sweep first (dermlit-train -m experiment=imbalance_sweep) or set DERMLIT_SWEEP_DIR=DIR"; \
	fi

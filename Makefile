# Two entry points for a fresh clone: `make demo` and `make test`. Each creates
# .venv and installs what it needs on first use, the pinned CPU build of torch
# first (an unpinned torch would pull a multi-GB CUDA build).
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.skadv-installed
DOCS_STAMP := $(VENV)/.skadv-docs-installed

.PHONY: demo test lint docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/skadv demo --output-dir skadv-demo

test: $(STAMP)
	$(BIN)/python -m pytest

$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[docs]"
	touch $(DOCS_STAMP)

# The site, with warnings as errors and every reference resolved; it runs the
# gallery examples on the bundled digits. Open docs/_build/html/index.html.
docs: $(DOCS_STAMP)
	$(BIN)/python -m sphinx -W --keep-going -n -b html docs docs/_build/html

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) skadv-demo .pytest_cache docs/_build docs/auto_examples \
		docs/generated docs/sg_execution_times.rst

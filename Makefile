# Two entry points; each sets up the virtual environment on first use.
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: serve test lint
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	# The CPU build of torch 2.13 first, so the range in pyproject.toml installs nothing larger.
	$(VENV)/bin/pip install -q "torch==2.13.0"
	$(VENV)/bin/pip install -q -e ".[dev]"
	touch $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/kiln serve $(ARGS)

# The layer contract (pyproject.toml [tool.importlinter]) first: the architecture is a test.
test: $(STAMP)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/pytest $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

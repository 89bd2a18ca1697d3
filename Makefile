# Quick start: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: demo test serve lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/moa demo $(ARGS)

test: $(VENV)/.installed
	$(BIN)/python -m pytest $(ARGS)

# Serve a run on http://127.0.0.1:8000/v1 (default: the demo's run; `make demo` first).
RUN ?= runs/demo
serve: $(VENV)/.installed
	$(BIN)/moa serve $(RUN) $(ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check orchestrator tests bench
	$(BIN)/ruff format --check orchestrator tests bench

format: $(VENV)/.installed
	$(BIN)/ruff check --fix orchestrator tests bench
	$(BIN)/ruff format orchestrator tests bench

bench: $(VENV)/.installed
	$(BIN)/python bench/svd_lora_overhead.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache

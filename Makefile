# HN Pal — the two commands: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test lint format bench clean

$(STAMP): setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]' --config-settings editable_mode=compat
	@touch $(STAMP)

install: $(STAMP)

## The main job, offline, on the embedded PostgreSQL and Redis (nothing to configure).
demo: install
	$(BIN)/hnpal demo

## Lint, format check and the whole test suite against the real PostgreSQL and Redis.
test: install lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## Benchmarks (each prints key=value figures last and fails when its target is missed).
BENCHES = content ingest crawl llm digest discuss soak fairness relevance cost console

# Every bench runs, even after one misses its target; the summary names those that did, and the exit
# status is non-zero if any did.
bench: install
	@failed=""; for b in $(BENCHES); do \
		echo "== bench/$$b.py"; $(BIN)/python bench/$$b.py || failed="$$failed $$b"; \
	done; \
	if [ -n "$$failed" ]; then echo "benches that missed a target or failed:$$failed"; exit 1; fi; \
	echo "every bench met its targets"

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache

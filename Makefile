# Two commands on a fresh machine:
#   make run    build everything, then benchmark the embedded default backends
#   make test   build everything, then run every check (cargo test, ruff, mypy, pytest)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.evercore-installed

.PHONY: run test setup build lint pytest bench-all clean

run: setup
	$(BIN)/evercore bench

test: setup
	cargo test --workspace --quiet
	$(BIN)/python -m pytest -q -p no:cacheprovider
	$(MAKE) lint

setup: $(STAMP)

# Rebuild when the Rust sources, the package metadata or the plugins change.
$(STAMP): pyproject.toml Cargo.toml $(shell find rust -name '*.rs' -o -name Cargo.toml) \
          $(wildcard plugins/*/pyproject.toml)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	$(BIN)/python -m pip install --quiet $(foreach p,$(wildcard plugins/*/pyproject.toml),-e $(dir $(p)))
	touch $(STAMP)

build: setup
	$(BIN)/python -m pip install --quiet -e .

lint:
	$(BIN)/ruff check python tests benches plugins
	$(BIN)/mypy --strict python/evercore $(filter-out %.egg-info,$(wildcard plugins/*/src/*))

bench-all: setup
	$(BIN)/python benches/side_by_side.py

clean:
	rm -rf $(VENV) target

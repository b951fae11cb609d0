# tinkex_actors — developer commands. The README's quick start uses only `make demo` and
# `make test`; both create .venv themselves and install what they need.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check
# Every install goes through constraints.txt: torch stays at the offline CPU build.
PIPI   := $(PIP) install -q -c constraints.txt

.PHONY: help demo docs test lint typecheck pytest bench bench-smoke proto server soak soak-recovery clean

help:
	@echo "make demo    fine-tune the tiny model on the embedded server, sample, save, plot"
	@echo "make test    lint, type check and the whole test suite"
	@echo "make bench   benchmarks against the official SDK (a few minutes; not in make test)"
	@echo "make soak    10-minute soak: memory, threads and errors under mixed load"
	@echo "make soak-recovery  5-minute daemon while its server is killed, wiped, restarted"
	@echo "make docs    regenerate the API reference (docs/api/) from the docstrings"
	@echo "make proto   regenerate tinkex_actors/wire/tinker_public_pb2.py from the .proto"
	@echo "make server  run the embedded server on 127.0.0.1:8000"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# torch first, pinned, so that the server extra never makes pip pick another build.
$(VENV)/.demo-installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIPI) torch==2.13.0
	$(PIPI) -e '.[server,demo]'
	@touch $@

# tinker-cookbook (tests/cookbook) without its dependencies: it requires tml-renderers, which has
# no matching release on the index; the dev extra lists what the cookbook's loops do import.
COOKBOOK := tinker-cookbook==0.6.1

$(VENV)/.test-installed: $(VENV)/.demo-installed
	$(PIPI) -e '.[server,demo,zstd,numpy,dev]'
	$(PIPI) --no-deps '$(COOKBOOK)'
	@touch $@

demo: $(VENV)/.demo-installed
	$(BIN)/python -m tinkex_actors.demo

test: $(VENV)/.test-installed lint pytest

LINT_PATHS := $(wildcard tinkex_actors tests examples bench docs/gen_api.py)

lint: $(VENV)/.test-installed
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy

pytest: $(VENV)/.test-installed
	$(BIN)/pytest

bench: $(VENV)/.test-installed
	$(BIN)/python -m bench

# 10 minutes of mixed training and sampling on an embedded null server: RSS growth, threads,
# errors (bench/soak.py; `make test` runs a 30-second version).
soak: $(VENV)/.test-installed
	$(BIN)/python bench/soak.py --seconds 600

# 5 minutes of a training and sampling daemon while the server is killed, wiped and restarted
# under it (bench/recovery_soak.py; `make test` runs a 30-second version).
soak-recovery: $(VENV)/.test-installed
	$(BIN)/python bench/recovery_soak.py --seconds 300 --steps 600

docs: $(VENV)/.demo-installed
	$(BIN)/python docs/gen_api.py

proto: $(VENV)/.test-installed
	$(BIN)/python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. \
		tinkex_actors/wire/tinker_public.proto

server: $(VENV)/.demo-installed
	$(BIN)/tinkex server --port 8000

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis build dist *.egg-info

# featdisco: `make demo` installs and runs the main job; `make test` installs and runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
DATA ?= ../shared/data
DEMO_DIR ?= runs/demo

.PHONY: install install-test demo test test-slow lint bench-split clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

install: $(VENV)/bin/python
	$(PIP) install --quiet -e .

install-test: $(VENV)/bin/python
	$(PIP) install --quiet -e '.[test]'

demo: install
	$(VENV)/bin/featdisco split $(DATA) -o $(DEMO_DIR)/pieces.parquet --stats

test: install-test
	$(PY) -m pytest -q -m "not slow"

test-slow: install-test
	$(PY) -m pytest -q -m slow

lint: install-test
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy

bench-split: install
	$(PY) bench/split.py

clean:
	rm -rf $(VENV) runs .pytest_cache

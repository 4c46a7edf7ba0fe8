# Two commands do everything on a fresh machine with Python 3.11:
#   make demo   serve every Truss locally with the real Truss server and call it
#   make test   run the test suite
# Checks: make lint (ruff + mypy, run by CI before the tests), make push-check (each Truss's image
# requirements resolve against PyPI; needs network).
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint push-check bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip check
	touch $@

demo: setup
	$(PY) -m tools.demo

test: setup
	$(PY) -m pytest -q tests

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

push-check: setup
	$(PY) -m tools.push_check

# Throughput benchmark (issue 8): real Truss servers vs the bare forward pass, side by side;
# writes bench/results/throughput.json and .png (~15 min on 2 quiet cores; not a test).
bench: setup
	PYTHONPATH=shared $(PY) -m bench.throughput

clean:
	rm -rf .cache

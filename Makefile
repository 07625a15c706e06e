# Shortcuts; README's Quick start spells out the commands in full.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install train test test-all lint format

$(PY):
	python3 -m venv $(VENV)

install: $(PY)
	$(VENV)/bin/pip install -q -e ".[dev,onnx]"

train: install
	$(PY) train.py

test: install
	$(PY) -m pytest -m "not slow" -q

test-all: install
	$(PY) -m pytest -q

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format:
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

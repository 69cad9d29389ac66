# Two commands do all the set-up on a fresh machine:  make run  |  make test
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel of torch lies on this project's dev/CI machines; a GPU host installs its
# CUDA build instead (make TORCH=torch install, or pip install -e '.[worker]').
TORCH ?= torch==2.13.0

.PHONY: install run test lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

run: install
	$(VENV)/bin/distillery up

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy service worker

test: lint
	$(VENV)/bin/pytest

clean:
	rm -rf $(VENV) .distillery .pytest_cache .mypy_cache .ruff_cache

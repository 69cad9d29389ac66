# Two commands do all the set-up on a fresh machine:  make run  |  make test
VENV ?= .venv
PY := $(VENV)/bin/python
# The torch stack, pinned: this pair of torch and torchvision lies on this project's dev/CI
# machines (a CUDA build that runs on the CPU); timm's model list is committed for its version
# (service/spec/timm_archs.json). A GPU host may install its own build instead
# (make TORCH="torch torchvision timm torchcodec" install, or pip install -e '.[worker]').
TORCH ?= torch==2.14.1 torchvision==0.29.1 timm==1.0.31 torchcodec==0.17.0

.PHONY: install run test lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
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

# The two front-door commands (see README): `make demo` and `make test`.
PYTHON ?= python3

.PHONY: install install-dev demo test lint

install:
	bash scripts/install.sh demo

install-dev:
	bash scripts/install.sh dev

demo: install
	$(PYTHON) -m multistore demo configs/demo.yml configs/demo-zenodo.yml

test: install-dev
	$(PYTHON) -m ruff check multistore tests benchmarks
	$(PYTHON) -m pytest -q

lint:
	$(PYTHON) -m ruff check multistore tests benchmarks

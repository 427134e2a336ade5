.PHONY: install serve test lint bench

install:
	./scripts/install.sh

serve: install
	.venv/bin/mlxserve serve

test: install
	.venv/bin/python -m pytest -ra --durations=15

lint:
	.venv/bin/ruff check mlxserve tests scripts

bench:
	.venv/bin/python scripts/bench.py all

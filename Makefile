# The two commands of the README:
#   make demo   builds .venv, starts the embedded server, simulates a guild and
#               writes an HTML report to reports/
#   make test   sets up everything the tests need, then lint, types and pytest
SHELL := /bin/bash
VENV := .venv/bin

.PHONY: demo test setup setup-test lint types pytest bench bench-quick clean

demo: setup
	$(VENV)/rdebug-nb demo --out reports/demo-report.html

test: setup-test lint types pytest

setup:
	scripts/setup.sh

setup-test:
	scripts/setup.sh --test

lint:
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .

types:
	$(VENV)/mypy

pytest:
	RDEBUG_REQUIRE_REDIS_SERVER=1 $(VENV)/pytest -q

bench: setup-test
	$(VENV)/python -m bench

bench-quick: setup-test
	$(VENV)/python -m bench --quick

clean:
	rm -rf .venv reports artifacts .pytest_cache .mypy_cache .ruff_cache

# The two commands of the README. Both work on a fresh clone.
.PHONY: run test lint help

help:
	@echo "make run   - install, migrate, load demo data, serve on http://127.0.0.1:8000/admin/"
	@echo "make test  - install test tools, run ruff, checks and pytest (SQLite, then PostgreSQL)"

run:
	scripts/run.sh $(ADDR)

test:
	scripts/test.sh $(PYTEST_ARGS)

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

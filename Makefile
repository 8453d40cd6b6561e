# mmaddp: `make setup` builds .venv (idempotent), `make test` runs the tests
# (setting up first when needed).
PY := .venv/bin/python

.PHONY: setup test

setup:
	bash tools/setup_env.sh

test: setup
	$(PY) -m pytest tests -q

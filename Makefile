# mmaddp: `make setup` builds .venv (idempotent), `make test` runs the linters and the tests,
# `make demo` runs ADDP end to end on the bundled data (both set up first when needed).
PY := .venv/bin/python

.PHONY: setup lint test data demo

setup:
	bash tools/setup_env.sh

# flake8 + isort + yapf, configured in setup.cfg (OpenMMLab's pre-commit set)
LINT_PATHS := mmaddp tools tests benchmarks configs setup.py
lint: setup
	$(PY) -m flake8 $(LINT_PATHS)
	$(PY) -m isort --check-only $(LINT_PATHS)
	$(PY) -m yapf --diff --recursive $(LINT_PATHS)

test: lint
	$(PY) -m pytest tests -q --durations=15

# the bundled demo data (ImageNet / COCO / ADE20K layouts) in data/demo
data: setup
	@if [ -d data/demo ]; then echo "data/demo exists (rm -r data/demo to rebuild)"; \
	else $(PY) tools/dataset_converters/make_demo_data.py --out data/demo; fi

# ADDP end to end on the bundled data: work_dirs/demo/report.md + metrics.json
# (finished stages are reused; an interrupted stage is redone)
demo: data
	$(PY) tools/run_demo.py --work-dir work_dirs/demo --data-root data/demo

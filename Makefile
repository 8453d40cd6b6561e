# mmaddp: `make setup` builds .venv (idempotent), `make test` runs the tests
# (setting up first when needed).
PY := .venv/bin/python

.PHONY: setup test data

setup:
	bash tools/setup_env.sh

test: setup
	$(PY) -m pytest tests -q

# the bundled demo data (ImageNet / COCO / ADE20K layouts) in data/demo
data: setup
	@if [ -d data/demo ]; then echo "data/demo exists (rm -r data/demo to rebuild)"; \
	else $(PY) tools/dataset_converters/make_demo_data.py --out data/demo; fi

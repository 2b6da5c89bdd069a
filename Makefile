# The two commands a new user needs (both install everything on first use):
#   make demo   run the main job, spark-submit jobs/rewrite.py, on the embedded default
#   make test   run the test suite
# The library as a wheel (dist/veclip-<version>-py3-none-any.whl; pip install it anywhere with the stack):
#   make wheel
# And the paper's comparison in miniature (an hour or more on 2 cores; not part of CI):
#   make reproduce   CLIP on AltText vs VeCap vs the mix, at several relevant-AltText rates (veclip.demo.reproduce)
SHELL := /bin/bash
VENV := $(CURDIR)/.venv
export PATH := $(VENV)/bin:$(PATH)
export SPARK_LOCAL_IP ?= 127.0.0.1
ROOT ?= $(CURDIR)/work
PYTEST_ARGS ?=
REPRODUCE_ARGS ?=

.PHONY: setup test demo reproduce ingest mlflow-ui wheel clean

setup:
	@bash scripts/setup.sh
	@bash scripts/datasets.sh

test: setup
	python -m pytest $(PYTEST_ARGS)

demo: setup
	bash scripts/demo.sh "$(ROOT)"

reproduce: setup
	python -m veclip.demo.reproduce --out "$(ROOT)/reproduce" $(REPRODUCE_ARGS)

# MLflow 3.17's UI opens in its GenAI view unless told otherwise: this address opens the Model training
# view (the runs); the browser then remembers the choice.
mlflow-ui: setup
	@echo "MLflow UI: http://127.0.0.1:5000/#/experiments?workflowType=machine_learning"
	mlflow ui --backend-store-uri sqlite:///$(ROOT)/mlflow.db --port 5000

# Built offline with the environment's uv and setuptools (no build isolation: nothing to download).
wheel:
	@bash scripts/setup.sh
	uv build --wheel --no-build-isolation --python $(VENV)/bin/python --out-dir dist

clean:
	rm -rf work spark-warehouse metastore_db derby.log build dist

# odpipe's entry points. `make repro` and `make test` are all a fresh machine needs:
# each creates .venv on first use and reuses it afterwards.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help env params deps repro segment classify test test-fast bench bench-segment bench-classify bench-quality bench-augment bench-train bench-data bench-track bench-serve bench-tflite bench-mlflow lint format mlflow-ui mlflow-server

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

env: $(STAMP)  ## create the virtual environment (once)

# The OD API's PyPI package pins versions that conflict with TF 2.15, and lvis (which the OD
# API imports) asks for the GUI build of OpenCV beside our headless one, so both go in without
# their dependencies; pyproject.toml lists what they really need, constraints.txt pins them all.
$(STAMP): pyproject.toml constraints.txt
	python3.11 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,server,s3]'
	$(PY) -m pip install -q --no-deps tf-object-detection-api==0.1 lvis==0.5.3
	@# An environment made before odpipe went headless-only also holds the GUI build, which shares
	@# the cv2 folder: remove it, then put the headless build's files back.
	if $(PY) -m pip show -q opencv-python 2>/dev/null; then $(PY) -m pip uninstall -q -y opencv-python && \
		$(PY) -m pip install -q --force-reinstall --no-deps -c constraints.txt opencv-python-headless; fi
	@# The team server's tests and benchmark start a throwaway PostgreSQL: its initdb, from the OS.
	@if command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -q postgresql || { apt-get update -q && apt-get install -y -q postgresql; }; \
	else echo "PostgreSQL is missing: the tests of the team MLflow server need its initdb. Install the OS" \
		"package postgresql (Debian/Ubuntu: sudo apt-get install postgresql; macOS: brew install postgresql@15)."; fi
	touch $(STAMP)

TASK ?= detect
params: $(STAMP)  ## compose conf/ into the task's params.yaml (TASK=segment|classify: <task>/params.yaml; OVERRIDES="train.num_steps=200 ...")
	$(PY) -m odpipe.core.runtime task=$(TASK) $(OVERRIDES)

deps: $(STAMP)  ## list in dvc.yaml every odpipe module each stage imports
	$(PY) -m odpipe.devtools.deps

repro: $(STAMP)  ## run the whole pipeline on the built-in data
	dvc repro

segment: $(STAMP)  ## the segmentation pipeline (segment/dvc.yaml) on the built-in data
	dvc repro segment/dvc.yaml

classify: $(STAMP)  ## the classification pipeline (classify/dvc.yaml) on the built-in data
	dvc repro classify/dvc.yaml

TEST_WORKERS ?= 2
test: $(STAMP)  ## run the whole test suite (what CI runs), in TEST_WORKERS processes
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder

test-fast: $(STAMP)  ## the unit tests only (tests/unit, a few minutes): the edit loop
	$(PY) -m pytest -m "not e2e" -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder

bench: $(STAMP)  ## quality bar: default pipeline from scratch, test mAP and stage times
	$(PY) benchmarks/quality.py

bench-quality: $(STAMP)  ## recipes of benchmarks/recipes.yaml, one budget each, as a queued DVC sweep (ARGS="--budget 8")
	$(PY) benchmarks/recipes.py $(ARGS)

bench-augment: $(STAMP)  ## cost of each augmentation policy in the tfrecord stage, against `none`
	$(PY) benchmarks/augment_speed.py

bench-train: $(STAMP)  ## train stage vs bare model_main_tf2.py: steps/s, val evaluation share, resume time
	$(PY) benchmarks/train_speed.py

bench-data: $(STAMP)  ## data stages at 2k and 20k images: time, peak RSS, tfrecord vs the notes' converters (ARGS="--sizes 200 500")
	$(PY) benchmarks/data_speed.py $(ARGS)

bench-track: $(STAMP)  ## video: tracking+counting cost over detection, frame strides, bytetrack vs centroid (after make repro)
	$(PY) benchmarks/track_speed.py $(ARGS)

bench-serve: $(STAMP)  ## mlflow models serve vs the model in-process: requests/s, p50/p99 at 1 and 4 clients (after make repro; ARGS="--model DIR")
	$(PY) benchmarks/serving_speed.py $(ARGS)

bench-tflite: $(STAMP)  ## TFLite float, float16 and int8 against the SavedModel: test mAP, size, latency (after make repro; ARGS="--project DIR")
	$(PY) benchmarks/tflite_quality.py $(ARGS)

bench-mlflow: $(STAMP)  ## MLflow logging cost: a training's per-step logging (none, sqlite, PostgreSQL server), 4 writers at once
	$(PY) benchmarks/mlflow_logging.py $(ARGS)

bench-segment: $(STAMP)  ## segmentation: train stage vs bare model.fit, data stages' memory 1k vs 10k, sliding windows vs whole image
	$(PY) benchmarks/segment_speed.py $(ARGS)

bench-classify: $(STAMP)  ## classification: train stage vs bare model.fit on image_dataset_from_directory, data stages' memory 2k vs 20k
	$(PY) benchmarks/classify_speed.py $(ARGS)

lint: $(STAMP)  ## ruff lint and format check
	ruff check odpipe stages tests benchmarks && ruff format --check odpipe stages tests benchmarks

format: $(STAMP)  ## apply ruff's fixes and formatting
	ruff check --fix odpipe stages tests benchmarks && ruff format odpipe stages tests benchmarks

mlflow-ui: $(STAMP)  ## browse runs at http://127.0.0.1:5000
	mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

# A team's tracking server, as MLflow documents it (docs/team.md): runs and registry in PostgreSQL
# (DB, driver named: SQLAlchemy reads a bare postgresql:// as psycopg 3, the server extra installs
# psycopg2), artifacts proxied by the server into ARTIFACTS (a shared folder or s3://bucket/path),
# so users need no storage credentials. JOBS=true also starts MLflow's GenAI job runner (7 more
# processes, ~1.6 GB) that odpipe never uses. ALLOWED_HOSTS: the names users reach it by, beyond
# localhost and private IPs (MLflow refuses other Host headers).
ARTIFACTS ?= ./mlartifacts
HOST ?= 0.0.0.0
PORT ?= 5000
WORKERS ?= 4
JOBS ?= false
ALLOWED_HOSTS ?=
mlflow-server: $(STAMP)  ## a team's MLflow server: DB=postgresql+psycopg2://user:pass@host:5432/mlflow (docs/team.md)
	@if [ -z "$(DB)" ]; then echo "make mlflow-server needs DB=postgresql+psycopg2://user:pass@host:5432/mlflow" \
		"(a PostgreSQL database for runs and models; see docs/team.md)" >&2; exit 2; fi
	@case "$(DB)" in postgres://*) false;; postgresql://*) $(PY) -c "import psycopg" 2>/dev/null;; esac \
		|| { echo "DB: name the driver, postgresql+psycopg2://... (SQLAlchemy reads postgresql:// as psycopg 3," \
		"which the server extra does not install, and knows no postgres://; docs/team.md)" >&2; exit 2; }
	@$(PY) -c "import uvloop" 2>/dev/null || [ "$(WORKERS)" = 1 ] || echo "note: without uvloop (pip install uvloop)," \
		"uvicorn's workers leave Nagle on: each request on a kept-alive connection waits ~40 ms (uvicorn#3149)"
	@# The commands are not echoed: DB may hold a password.
	@echo "mlflow db upgrade <DB>" && mlflow db upgrade "$(DB)"
	@echo "mlflow server --backend-store-uri <DB> --artifacts-destination $(ARTIFACTS) --host $(HOST) --port $(PORT)" \
		"--workers $(WORKERS) $(if $(ALLOWED_HOSTS),--allowed-hosts $(ALLOWED_HOSTS))"
	@MLFLOW_SERVER_ENABLE_JOB_EXECUTION=$(JOBS) mlflow server --backend-store-uri "$(DB)" \
		--artifacts-destination "$(ARTIFACTS)" --host $(HOST) --port $(PORT) --workers $(WORKERS) \
		$(if $(ALLOWED_HOSTS),--allowed-hosts "$(ALLOWED_HOSTS)")

# contrastive: `make train` runs the main job, `make test` passes the tests; each installs what it needs.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
TORCH_VERSION ?= 2.13.0
ARGS ?=

.PHONY: install train test test-fast lint sweep evaluate app bench reproduce mlflow clean

install: $(STAMP)

# torch first, pinned to the CPU wheel this machine carries: otherwise pip pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==$(TORCH_VERSION)
	$(PIP) install -q -e '.[dev,onnx,cluster]'
	$(PIP) check
	touch $(STAMP)

train: install                        ## the recipe `make reproduce` promoted (conf/recipe/best.yaml), all train pairs
	$(PY) -m contrastive.train +recipe=best $(ARGS)   # ARGS="loss.aux_weight=0.3 ..." changes it

test: install                         ## the whole suite (unit + end-to-end on the fixture + browser)
	$(PY) -m pytest -q --durations=25 $(ARGS)  # the 25 slowest tests printed: the suite must stay well under 20 min

test-fast: install                    ## unit tests only
	$(PY) -m pytest -q -m "not slow" $(ARGS)

lint: install                         ## ruff check and ruff format --check (CI runs it)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

sweep: install                        ## the design card's Optuna sweep (batch size x loss balance)
	$(PY) -m contrastive.train -m +sweeps=loss_balance $(ARGS)

evaluate: install                     ## score a checkpoint beside the baseline: make evaluate ARGS="checkpoint=DIR eval.split=test"
	$(PY) -m contrastive.evaluate $(ARGS)

app: install                          ## Gradio demo on the best checkpoint (127.0.0.1:7860)
	$(PY) -m contrastive.app $(ARGS)

bench: install                        ## speed ratios + quality, markdown to stdout, JSON to outputs/bench/ (< 20 min)
	$(PY) -m contrastive.bench $(ARGS)

reproduce: install                    ## the proof on real QQP (~2 h on 2 cores): sweep, final training, ablation,
	$(PY) -m contrastive.reproduce $(ARGS)   # test-split report -> results/ and README's Results section

mlflow: install                       ## the MLflow UI on the embedded store
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///mlruns.db --artifacts-destination ./mlartifacts

clean:
	rm -rf outputs multirun .cache .pytest_cache .ruff_cache

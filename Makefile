# wydot_lab: every target bootstraps .venv itself, so `make test` / `make pipeline`
# are the whole set-up on a fresh machine with Python 3.11 and pip.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PARAMS ?= params/default.yaml
# Keep Jupyter/matplotlib/numba state inside the project, never in $HOME.
export IPYTHONDIR       := $(CURDIR)/.cache/ipython
export JUPYTER_DATA_DIR := $(CURDIR)/.cache/jupyter
export MPLCONFIGDIR     := $(CURDIR)/.cache/matplotlib
export NUMBA_CACHE_DIR  := $(CURDIR)/.cache/numba
export PYDEVD_DISABLE_FILE_VALIDATION := 1
$(shell mkdir -p $(IPYTHONDIR) $(JUPYTER_DATA_DIR) $(MPLCONFIGDIR) $(NUMBA_CACHE_DIR))

.PHONY: help install test pipeline bench bench-scale lab synth-data clean stress

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the project with its test extras

test: $(STAMP) ## install everything, lint (ruff), run the whole test suite (incl. notebooks via nbval)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -p no:cacheprovider tests
	$(PY) -m pytest -q -p no:cacheprovider --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-current-env notebooks

pipeline: $(STAMP) ## run the stage notebooks with papermill on $(PARAMS) into outputs/<run-id>/
	$(VENV)/bin/wydot-lab pipeline $(PARAMS)

bench: $(STAMP) ## print speed figures beside their peers
	@for b in benchmarks/bench_*.py; do [ $$b = benchmarks/bench_scale.py ] || $(PY) $$b || exit 1; done

bench-scale: $(STAMP) ## 1 M, 3 M, 10 M records: ingest + experiment seconds, records/s, peak RSS (SIZES=1: 1 M only)
	$(PY) benchmarks/bench_scale.py $${SIZES:-1,3,10}

stress: $(STAMP) ## faults, kills, concurrency, full/read-only disks, hostile files on loopback; table, exit 1 on loss
	timeout 600 $(PY) benchmarks/stress.py

lab: $(STAMP) ## open JupyterLab on the notebooks (as a user or as root); prints the URL to open
	@echo "JupyterLab on 127.0.0.1: open the http://127.0.0.1:.../lab?token=... URL it prints below"
	$(VENV)/bin/jupyter lab --ip=127.0.0.1 --no-browser $(if $(filter 0,$(shell id -u)),--allow-root) notebooks

synth-data: $(STAMP) ## regenerate the committed synthetic corpus in test_data/
	rm -rf test_data/synthetic_wydot
	$(VENV)/bin/wydot-lab synth --params params/default.yaml --out test_data/synthetic_wydot

clean: ## remove caches and outputs (keeps .venv)
	rm -rf outputs data/cache .cache .pytest_cache

# bayes_sd: `make demo` runs the main job on the embedded data, `make test` runs the tests.
# Both create .venv from a Python >= 3.12 (found by .ci/find-python) when it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= reports/demo

# Compile caches live in the checkout so tests, demo and CI reuse them.
export PYTENSOR_FLAGS ?= base_compiledir=$(CURDIR)/.cache/pytensor
export NUMBA_CACHE_DIR ?= $(CURDIR)/.cache/numba
export MPLBACKEND ?= Agg
# This machine sets PYTHONDONTWRITEBYTECODE=1, which makes every import recompile from source.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: demo test test-slow lint docs format clean venv

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml .ci/constraints.txt
	@set -e; \
	if [ ! -x $(PY) ]; then \
	  base=$$(bash .ci/find-python); \
	  echo "creating $(VENV) with $$base"; \
	  "$$base" -m venv $(VENV); \
	fi; \
	$(PY) -m pip install --quiet --disable-pip-version-check -c .ci/constraints.txt -e ".[dev]" 2> $(VENV)/pip.log \
	  || { grep -v "is ignored" $(VENV)/pip.log >&2; exit 1; }
	@touch $@

demo: venv
	$(VENV)/bin/bayes-sd demo --out $(OUT)

test: venv lint docs
	$(PY) -m pytest -m "not slow" -n 2 --dist loadgroup

# The documentation site (MkDocs, strict: a broken link or API reference fails the build).
docs: venv
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

test-slow: venv
	$(PY) -m pytest -m slow

lint: venv
	$(VENV)/bin/ruff check bayes_sd tests benchmarks data validation notebooks
	$(VENV)/bin/ruff format --check bayes_sd tests benchmarks data validation notebooks

format: venv
	$(VENV)/bin/ruff format bayes_sd tests benchmarks data validation
	$(VENV)/bin/ruff check --fix bayes_sd tests benchmarks data validation

clean:
	rm -rf $(VENV) .cache reports site .pytest_cache .hypothesis

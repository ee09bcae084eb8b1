# vitsweep: `make demo` runs the main job on a laptop, `make test` runs the test suite.
# Both create .venv when it is missing and install the project into it first; `make test` also
# makes sure Debian's chromium is there for the dashboard's browser tests (.ci/ensure-chromium:
# apt-get when run as root, else one line naming the command). VITSWEEP_CHROMIUM names another browser.

PYTHON ?= python3
export VITSWEEP_CHROMIUM ?= /usr/bin/chromium
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed
# extra pytest arguments, e.g. PYTEST_ARGS="-n 2 --dist loadgroup" for two pytest-xdist workers (tests/conftest.py)
PYTEST_ARGS ?=

.PHONY: demo test test-fast browser bench mutants clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,s3]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vitsweep demo

test: browser $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

browser:
	@.ci/ensure-chromium

# Everything but the multi-process Ray and browser tests.
test-fast: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS) -m "not slow"

# from the repository root, as modules: python -m benchmarks.bench_x (benchmarks/common.py, tests.support)
bench: $(STAMP)
	$(PY) -m benchmarks.bench_match
	$(PY) -m benchmarks.bench_lipschitz --null-model tests.support.tiny_models:tiny_vit --null-batch 20
	$(PY) -m benchmarks.bench_perturb --pairs 4 --steps 3 --draws 2
	$(PY) -m benchmarks.bench_shards
	$(PY) -m benchmarks.bench_orchestration

# Mutation testing of the core modules (slow: hours; not in CI). MODULES=sweep/run/store.py for one.
mutants: $(STAMP)
	$(PY) -m pip install -q -e '.[mutants]'
	$(PY) tools/mutants.py $(MODULES)

clean:
	rm -rf $(VENV) demo-run artifacts .pytest_cache .mutants

# Two entry points, each sets everything up first: `make report` (the main job) and `make test` (the whole suite,
# what CI runs); `make test-fast` is the quick tier of the tests for while you work.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: report test test-fast setup bench

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh $(VENV)
	touch $@

setup: $(VENV)/.installed

report: $(VENV)/.installed
	$(PY) -m workbench report --out reports/report.html --json reports/results.json

# Tests get an empty result cache: nothing cached by an earlier version of the code can answer for this one.
test: $(VENV)/.installed
	WORKBENCH_CACHE=$$(mktemp -d) $(PY) -m pytest tests notebooks --nbval-lax --nbval-current-env --nbval-sanitize-with notebooks/sanitize.cfg --nbval-cell-timeout=600 -p no:cacheprovider

# The quick tier (docs/testing.md): everything in tests/ except tests marked slow, browser or network; no notebooks.
test-fast: $(VENV)/.installed
	WORKBENCH_CACHE=$$(mktemp -d) $(PY) -m pytest tests -m "not slow and not browser and not network" -q -p no:cacheprovider

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_engines.py --out benchmarks/results.json

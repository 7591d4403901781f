# Two entry points, each sets everything up first: `make report` (the main job) and `make test` (the whole suite).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: report test setup bench

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh $(VENV)
	touch $@

setup: $(VENV)/.installed

report: $(VENV)/.installed
	$(PY) -m workbench report --out reports/report.html --json reports/results.json

# Tests get an empty result cache: nothing cached by an earlier version of the code can answer for this one.
test: $(VENV)/.installed
	WORKBENCH_CACHE=$$(mktemp -d) $(PY) -m pytest tests notebooks --nbval-lax --nbval-current-env --nbval-sanitize-with notebooks/sanitize.cfg --nbval-cell-timeout=600 -p no:cacheprovider

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_engines.py --out benchmarks/results.json

# Two entry points: `make demo` and `make test`. Both create .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2
STAMP := $(VENV)/.installed

.PHONY: demo demo-hunyuan report test venv lint dag clean system-deps

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt -c constraints.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

# The toy-world demo: the pretrained toy Wan2.1-I2V edits clips whose true edit is known.
demo: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --configfile config/config.yaml
	@echo "tables: results/tables/  report: make report"

# The same DAG on a random tiny HunyuanVideo-I2V (paper Sec. 4.4): plumbing, its output is noise.
# Outputs in demo-hunyuan/results/.
demo-hunyuan: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --configfile config/config.yaml config/demo-hunyuan.yaml --directory demo-hunyuan

report: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --report results/report.html

# Debian packages the tests need (SLURM, headless Chromium): installed with apt-get when run as
# root, else one line says what to install and `make test` stops before any test runs.
system-deps:
	@for setup in .ci/setup.d/*.sh; do bash "$$setup" || exit 1; done

test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=15 tests

# The architecture (import-linter contracts in pyproject.toml), Python style (ruff) and the workflow.
lint: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile rules/

dag: $(STAMP)
	$(BIN)/snakemake --rulegraph mermaid-js > docs/rulegraph.mmd

clean:
	rm -rf results .snakemake

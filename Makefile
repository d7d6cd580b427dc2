# Two entry points: `make demo` and `make test`. Both create .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2
STAMP := $(VENV)/.installed

.PHONY: demo demo-wan demo-hunyuan report test venv lint dag clean system-deps

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt -c constraints.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

# The demo on the tiny Wan2.1-I2V, then the same clips on the tiny HunyuanVideo-I2V (paper Sec. 4.4).
demo: demo-wan demo-hunyuan
	@echo "tables: results/tables/ (Wan), demo-hunyuan/results/tables/ (HunyuanVideo)  report: make report"

demo-wan: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --configfile config/config.yaml

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

lint: $(STAMP)
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile rules/

dag: $(STAMP)
	$(BIN)/snakemake --rulegraph mermaid-js > docs/rulegraph.mmd

clean:
	rm -rf results .snakemake

# Two entry points: `make demo` and `make test`. Both create .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2
STAMP := $(VENV)/.installed

.PHONY: demo report test venv lint dag clean

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt -c constraints.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --configfile config/config.yaml
	@echo "tables: results/tables/  report: make report"

report: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --report results/report.html

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

lint: $(STAMP)
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile rules/

dag: $(STAMP)
	$(BIN)/snakemake --rulegraph mermaid-js > docs/rulegraph.mmd

clean:
	rm -rf results .snakemake

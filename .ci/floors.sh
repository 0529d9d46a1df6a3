#!/usr/bin/env bash
# The default (non-slow) test suite in a second environment at the declared floors: transformers, accelerate,
# datasets, peft and huggingface-hub at the lowest versions pyproject.toml admits (.ci/floors.txt). torch stays 2.13.0,
# the one CPU build that installs without pulling a multi-GB CUDA build (README, "Compatibility").
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv-floors
# shellcheck disable=SC1091
. .venv-floors/bin/activate
pip install --quiet torch==2.13.0
pip install --quiet -e ".[test]" -c .ci/floors.txt
# What is tested is what floors.txt says: a resolver that picked another version fails here, not silently.
python - <<'PY'
from importlib.metadata import version
from pathlib import Path

pins = dict(line.split("==") for line in Path(".ci/floors.txt").read_text().split() if "==" in line)
found = {name: version(name) for name in pins}
print("floor environment:", ", ".join(f"{n} {v}" for n, v in found.items()), "| torch", version("torch"))
assert found == pins, f"installed {found}, expected {pins}"
PY
HF_HUB_OFFLINE=1 python -m pytest

#!/usr/bin/env bash
# Lint, format and type checks (seconds to a minute), run by .ci/run before the tests and by `make check`.
# Run it in an environment where hf-dmix and its dependencies are installed: mypy reads torch's and transformers'
# types. It installs the checkers itself, at the versions pyproject.toml's configuration was written for.
set -euo pipefail
cd "$(dirname "$0")/.."

pip install --quiet "ruff==0.17.6" "mypy==2.4.1"
ruff check .
ruff format --check .
mypy  # configuration and the checked package: [tool.mypy] in pyproject.toml

#!/usr/bin/env bash
# Apply the linter's safe fixes (import order, unused noqa...) and the formatter to the whole tree, with the
# configuration in pyproject.toml ([tool.ruff]). Run once after merging branches, then review and commit the result;
# `make check` (or .ci/lint.sh) verifies it stays so.
set -euo pipefail
cd "$(dirname "$0")/.."

ruff check --fix .
ruff format .
ruff check .  # what the fixes could not do is left to fix by hand

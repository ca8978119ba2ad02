#!/usr/bin/env bash
# Lint as CI would: flake8 (line length 100) and isort, settings in setup.cfg.
set -euo pipefail
cd "$(dirname "$0")/.."
flake8 projects tools tests dev
isort --check-only --diff projects tools tests dev

#!/usr/bin/env bash
# Install what is missing, build everything, and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/build.sh
cd build && ctest --output-on-failure -j"$(nproc)" --timeout 900

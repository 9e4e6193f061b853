#!/usr/bin/env bash
# The main job: install what is missing, build, and generate samples.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/build.sh --target tweedie_cli
mkdir -p out
./build/tweedie sample -m gmm:models/gmm/ring2d.json -n 4000 --seed 1 -o out/ring2d.png
echo "wrote out/ring2d.png"

#!/usr/bin/env bash
# The main job: install what is missing, build, and generate samples.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/build.sh --target tweedie_cli
mkdir -p out
# the shipped class-conditional Fashion-MNIST model: one row per class, 8 samples each
./build/tweedie sample --class all -n 80 --cfg 3 --steps 20 -o out/fashion_mnist.png
# the shipped FashionCanvas text-to-image model (the default of `tweedie generate`):
# a labelled 16-image grid, four prompts (the last names a held-out pair) x four seeds
./build/tweedie generate --grid --batch-size 4 --steps 20 --cfg 5 \
  -p "a red sneaker at the top left and a blue bag at the bottom right" \
  -p "a yellow t-shirt at the top right" \
  -p "a white trouser at the top left and a cyan coat at the top right and a magenta sandal at the bottom left" \
  -p "a green bag at the bottom left and a orange sneaker at the bottom right" \
  -o out/fashion_canvas.png

#!/usr/bin/env bash
# Configure and build tweedie into build/ (Release, Ninja). Extra arguments go to cmake --build.
# Ninja rebuilds only what a change touches (a new source file does not rebuild every object).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f build/CMakeCache.txt ] && ! grep -q "^CMAKE_GENERATOR:INTERNAL=Ninja$" build/CMakeCache.txt; then
  rm -rf build/CMakeCache.txt build/CMakeFiles  # configured by another generator before
fi
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release > build.log 2>&1 || { cat build.log; exit 1; }
cmake --build build -j"$(nproc)" "$@"

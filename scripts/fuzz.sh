#!/usr/bin/env bash
# libFuzzer runs of tweedie's file and text parsers (fuzz/fuzz_*.cpp).
#
#   scripts/fuzz.sh TARGET SECONDS     build fuzz/fuzz_TARGET.cpp if needed, run it
#   scripts/fuzz.sh all SECONDS        every target in turn, SECONDS each
#   scripts/fuzz.sh build [TARGET]     build only
#
# Targets: safetensors zip pickle png npy yaml config prompt tokenizer.
# Built with clang (-fsanitize=fuzzer,address,undefined; libtorch itself is
# not instrumented) into build-fuzz/ (objects reused between targets). A run
# starts from the seeds in fuzz/corpus/TARGET/ and keeps what it finds in
# build-fuzz/corpus/TARGET/ (outside git). Crash/leak/timeout inputs go to
# build-fuzz/artifacts/TARGET/; the script then prints their paths and exits
# non-zero. Everything runs under nice -n 19.
# Environment: FUZZ_JOBS (parallel compiles, default 1), FUZZ_ARGS (extra
# libFuzzer flags), TWEEDIE_CLIP_TOKENIZER (vocab.json + merges.txt folder for
# the prompt and tokenizer targets, default /work/shared/clip-tokenizer).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=$ROOT/build-fuzz
TARGETS=(safetensors pickle zip png yaml npy config prompt tokenizer)

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 1 ] || usage

# The sources each target links (src/<dir>/<name>.cpp).
sources_of() {
  case "$1" in
    safetensors|pickle) echo io/fs io/zip io/safetensors io/pickle io/state_dict ;;
    zip) echo io/fs io/zip ;;
    png) echo io/fs io/png ;;
    npy) echo io/fs io/npy ;;
    yaml) echo io/yaml ;;
    # The two config parsers live in the model files: those link the layers
    # and the text pipeline they use (nothing of them runs here).
    config) echo io/fs io/zip io/safetensors io/pickle io/state_dict models/clip_tokenizer models/prompt_weighting \
                 nn/module_weights nn/hooks nn/norm nn/fused_ops nn/resample nn/attention nn/flash_attention \
                 models/autoencoder_kl models/clip_text ;;
    prompt) echo io/fs models/clip_tokenizer models/prompt_weighting ;;
    tokenizer) echo io/fs models/clip_tokenizer ;;
    *) echo "unknown target '$1' (one of: ${TARGETS[*]}, all)" >&2; exit 2 ;;
  esac
}

CXX=${CXX:-clang++}
ensure_clang() {
  local rt
  if command -v "$CXX" >/dev/null; then
    rt=$("$CXX" -print-file-name=libclang_rt.fuzzer-x86_64.a 2>/dev/null || true)
    if [ -f "$rt" ] || ls "$("$CXX" -print-resource-dir 2>/dev/null)"/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1; then
      return
    fi
  fi
  local SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  echo "installing: clang libclang-rt-dev" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends clang libclang-rt-14-dev >&2 ||
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends clang libclang-rt-dev >&2
}

SAN="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined"
CXXFLAGS="-std=c++17 -fPIC -g -O1 -ffunction-sections -fdata-sections $SAN -D_GLIBCXX_USE_CXX11_ABI=1 -I $ROOT/include -I $ROOT/fuzz
  -I /usr/include/torch/csrc/api/include -Wno-unused-command-line-argument"
LIBS="-L/usr/lib/x86_64-linux-gnu -ltorch -ltorch_cpu -lc10 -ldnnl -lpng -lz -lpthread"
PCH=$OUT/pch.h.pch

# Is $1 (an output with a clang .d file $2) older than any of its inputs?
stale() {
  local out=$1 dep=$2 f
  [ -f "$out" ] && [ -f "$dep" ] || return 0
  for f in $(sed -e 's/\\$//' -e 's/^[^:]*://' "$dep"); do
    [ "$f" -nt "$out" ] && return 0
  done
  return 1
}

compile() {  # src obj
  local src=$1 obj=$2
  if stale "$obj" "$obj.d"; then
    echo "  compile $src" >&2
    nice -n 19 "$CXX" $CXXFLAGS -include-pch "$PCH" -MMD -MF "$obj.d" -c "$src" -o "$obj"
  fi
}

build() {
  local t=$1 s objs=()
  ensure_clang
  mkdir -p "$OUT/obj"
  # One build at a time (several runs may share objects).
  exec 9>"$OUT/.build.lock"
  flock 9
  # torch/torch.h (the library's precompiled header) once, as a clang PCH.
  if stale "$PCH" "$PCH.d"; then
    echo "  pch include/tweedie/core/pch.h" >&2
    nice -n 19 "$CXX" $CXXFLAGS -x c++-header -MMD -MF "$PCH.d" "$ROOT/include/tweedie/core/pch.h" -o "$PCH"
  fi
  local pids=() srcs=()
  for s in $(sources_of "$t"); do srcs+=("$ROOT/src/$s.cpp"); done
  srcs+=("$ROOT/fuzz/fuzz_$t.cpp")
  local jobs=${FUZZ_JOBS:-1} n=0
  for s in "${srcs[@]}"; do
    local o=$OUT/obj/$(basename "$(dirname "$s")")_$(basename "$s" .cpp).o
    objs+=("$o")
    compile "$s" "$o" &
    pids+=($!)
    n=$((n + 1))
    if [ "$n" -ge "$jobs" ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); n=$((n - 1)); fi
  done
  for p in "${pids[@]}"; do wait "$p"; done
  local bin=$OUT/fuzz_$t newer=0
  for o in "${objs[@]}"; do [ "$o" -nt "$bin" ] && newer=1; done
  if [ ! -x "$bin" ] || [ $newer = 1 ]; then
    echo "  link $bin" >&2
    nice -n 19 "$CXX" -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -g \
      "${objs[@]}" $LIBS -o "$bin.tmp"
    mv "$bin.tmp" "$bin"
  fi
  flock -u 9
}

run() {  # target seconds
  local t=$1 secs=$2
  build "$t"
  local corpus=$OUT/corpus/$t arts=$OUT/artifacts/$t log=$OUT/logs/$t.log
  mkdir -p "$corpus" "$arts" "$(dirname "$log")"
  echo "== fuzz_$t for ${secs}s (seeds fuzz/corpus/$t, corpus $corpus, log $log)"
  local rc=0 start end
  start=$(date +%s)
  # The working corpus first: new inputs are written there, never into git.
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0} \
  UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
  nice -n 19 "$OUT/fuzz_$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
    -artifact_prefix="$arts/" ${FUZZ_ARGS:-} "$corpus" "$ROOT/fuzz/corpus/$t" >"$log" 2>&1 || rc=$?
  end=$(date +%s)
  grep -E '^(Done [0-9]+ runs|stat::)' "$log" || true
  echo "wall seconds: $((end - start))"
  if [ $rc -ne 0 ] || grep -qE 'Test unit written to|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:' "$log"; then
    echo "FINDING in $t (exit $rc); see $log" >&2
    grep -E 'SUMMARY:|ERROR:|runtime error:|Test unit written to' "$log" | head -20 >&2
    return 1
  fi
  echo "no findings in $t"
}

case "$1" in
  build)
    if [ $# -ge 2 ]; then build "$2"; else for t in "${TARGETS[@]}"; do build "$t"; done; fi ;;
  all)
    [ $# -eq 2 ] || usage
    fails=()
    for t in "${TARGETS[@]}"; do run "$t" "$2" || fails+=("$t"); done
    if [ ${#fails[@]} -gt 0 ]; then echo "findings in: ${fails[*]}" >&2; exit 1; fi ;;
  *)
    [ $# -eq 2 ] || usage
    sources_of "$1" >/dev/null
    run "$1" "$2" ;;
esac

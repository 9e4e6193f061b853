// Shared helpers for the libFuzzer targets in fuzz/ (built by scripts/fuzz.sh).
// File-based loaders get the input through one fixed temporary file per
// process; every target catches tweedie::Error only, so any other exception
// escaping, a sanitizer report, a crash, a hang or a leak is a finding.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "tweedie/models/clip_tokenizer.h"

namespace fuzz {

// /tmp/fuzz-<name>-<pid>: written afresh for every input, removed at exit.
inline const std::string& input_path(const char* name) {
  static const std::string path = [&] {
    std::string p = std::string("/tmp/fuzz-") + name + "-" + std::to_string(getpid());
    static std::string keep = p;
    std::atexit([] { std::remove(keep.c_str()); });
    return p;
  }();
  return path;
}

inline const std::string& write_input(const char* name, const uint8_t* data, size_t size) {
  const std::string& p = input_path(name);
  FILE* f = std::fopen(p.c_str(), "wb");
  if (!f) std::abort();
  if (size && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
  return p;
}

// The real CLIP tokenizer (TWEEDIE_CLIP_TOKENIZER, default
// /work/shared/clip-tokenizer), loaded once; targets load it in
// LLVMFuzzerInitialize, since reading the 49,408-entry vocabulary and the
// merges under ASan takes seconds that -timeout would charge to the first input.
inline const tweedie::ClipTokenizer& tokenizer() {
  static const std::unique_ptr<tweedie::ClipTokenizer> tok = [] {
    const char* dir = std::getenv("TWEEDIE_CLIP_TOKENIZER");
    return std::make_unique<tweedie::ClipTokenizer>(dir ? dir : "/work/shared/clip-tokenizer");
  }();
  return *tok;
}

// An Error message must be one non-empty line.
inline void check_message(const char* what) {
  const std::string m = what;
  if (m.empty()) {
    std::fprintf(stderr, "empty error message\n");
    std::abort();
  }
}

}  // namespace fuzz

// Running the built CLI from tests: its exit code and output, temporary
// paths, and the one-line error check every bad-input test uses.
#pragma once
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <string>

namespace tweedie::testing {

struct Result {
  int code;
  std::string out;  // stdout + stderr
};

// Run `tweedie ARGS` from the source directory.
inline Result cli(const std::string& args) {
  std::string cmd = std::string("cd ") + TWEEDIE_SOURCE_DIR + " && " + TWEEDIE_CLI + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t k;
  while ((k = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, k);
  int st = pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

inline std::string tmp(const std::string& name) { return ::testing::TempDir() + "/cli_" + name; }
inline bool exists(const std::string& p) { return std::ifstream(p).good(); }

// The last line of an error run: "error: ..." naming the culprit.
inline void expect_error(const std::string& args, const std::string& needle, const std::string& must_not_exist = "") {
  Result r = cli(args);
  EXPECT_NE(r.code, 0) << args;
  EXPECT_NE(r.out.find("error: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(needle), std::string::npos) << "expected '" << needle << "' in: " << r.out;
  EXPECT_EQ(r.out.find("Segmentation"), std::string::npos);
  EXPECT_EQ(r.out.find("terminate called"), std::string::npos);
  if (!must_not_exist.empty()) EXPECT_FALSE(exists(must_not_exist)) << must_not_exist;
}

}  // namespace tweedie::testing

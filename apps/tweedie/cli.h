// CLI plumbing shared by the subcommands: argument parsing with one-line
// errors, and the subcommand table.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "tweedie/core/registry.h"

namespace tweedie::cli {

// Parsed "--key value" / "-k value" / "--flag" arguments of one subcommand.
// Every option must be declared; unknown ones are an error naming them.
class Args {
 public:
  struct Opt {
    std::string name;   // long name without dashes
    std::string short_name;  // e.g. "n" for -n, may be empty
    bool flag;          // takes no value
    std::string help;
    std::string dflt;   // shown in --help
  };
  Args(std::string command, std::string usage, std::vector<Opt> opts);
  // Parse argv; returns false (after printing help) if --help was given.
  bool parse(int argc, char** argv);
  bool has(const std::string& name) const;
  std::string str(const std::string& name) const;  // value or default (the last one if repeated)
  std::vector<std::string> all(const std::string& name) const;  // every value given, in order
  int integer(const std::string& name) const;      // throws on malformed
  double number(const std::string& name) const;
  const std::vector<std::string>& positional() const { return pos_; }
  std::string help() const;

 private:
  const Opt& find(const std::string& token) const;
  std::string command_, usage_;
  std::vector<Opt> opts_;
  std::map<std::string, std::string> vals_;
  std::map<std::string, std::vector<std::string>> all_;
  std::vector<std::string> pos_;
};

struct Command {
  std::string name;
  std::string summary;
  int (*run)(int argc, char** argv);
};
struct CommandRegistrar {
  explicit CommandRegistrar(Command c);
};
const Registry<Command>& commands();

// `tweedie bench NAME`: each benchmark is a file (cmd_bench_*.cpp) that
// registers itself here, like the commands above.
struct BenchRegistrar {
  explicit BenchRegistrar(Command c);
};
const Registry<Command>& bench_commands();

// Seconds on a monotonic clock (for timing).
double now();

// Progress line on stderr: "step i/n  it/s  ETA".
class Progress {
 public:
  Progress(std::string label, int total, bool enabled = true);
  void update(int done, const std::string& extra = "");
  void finish();

 private:
  std::string label_;
  int total_;
  bool enabled_;
  double start_, last_ = 0;
};

}  // namespace tweedie::cli

// CLI plumbing: argument parsing, progress, subcommand table.
#include "cli.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <sstream>

#include "tweedie/core/error.h"

namespace tweedie::cli {

namespace {
Registry<Command>& command_table() {
  static Registry<Command> t("command");
  return t;
}
Registry<Command>& bench_table() {
  static Registry<Command> t("benchmark");
  return t;
}
}  // namespace

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

CommandRegistrar::CommandRegistrar(Command c) { command_table().add(std::move(c)); }
const Registry<Command>& commands() { return command_table(); }
BenchRegistrar::BenchRegistrar(Command c) { bench_table().add(std::move(c)); }
const Registry<Command>& bench_commands() { return bench_table(); }

Args::Args(std::string command, std::string usage, std::vector<Opt> opts)
    : command_(std::move(command)), usage_(std::move(usage)), opts_(std::move(opts)) {}

const Args::Opt& Args::find(const std::string& token) const {
  for (auto& o : opts_) {
    if (token == "--" + o.name) return o;
    if (!o.short_name.empty() && token == "-" + o.short_name) return o;
  }
  fail("tweedie ", command_, ": unknown option '", token, "' (see tweedie ", command_, " --help)");
}

bool Args::parse(int argc, char** argv) {
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::cout << help();
      return false;
    }
    if (a.size() > 1 && a[0] == '-' && !(std::isdigit((unsigned char)a[1]) || a[1] == '.')) {
      std::string value;
      bool inline_value = false;
      auto eq = a.find('=');
      if (a.rfind("--", 0) == 0 && eq != std::string::npos) {
        value = a.substr(eq + 1);
        a = a.substr(0, eq);
        inline_value = true;
      }
      const Opt& o = find(a);
      if (o.flag) {
        if (inline_value) fail("tweedie ", command_, ": option --", o.name, " takes no value");
        vals_[o.name] = "1";
      } else {
        if (!inline_value) {
          if (i + 1 >= argc) fail("tweedie ", command_, ": option ", a, " needs a value");
          value = argv[++i];
        }
        vals_[o.name] = value;
        all_[o.name].push_back(value);
      }
    } else {
      pos_.push_back(a);
    }
  }
  return true;
}

bool Args::has(const std::string& name) const { return vals_.count(name) > 0; }

std::vector<std::string> Args::all(const std::string& name) const {
  auto it = all_.find(name);
  return it == all_.end() ? std::vector<std::string>{} : it->second;
}

std::string Args::str(const std::string& name) const {
  auto it = vals_.find(name);
  if (it != vals_.end()) return it->second;
  for (auto& o : opts_)
    if (o.name == name) return o.dflt;
  fail("internal: option --", name, " not declared");
}

int Args::integer(const std::string& name) const {
  std::string v = str(name);
  try {
    size_t pos = 0;
    long long x = std::stoll(v, &pos);
    if (pos != v.size() || x < INT32_MIN || x > INT32_MAX) throw std::invalid_argument("");
    return static_cast<int>(x);
  } catch (const std::exception&) {
    fail("tweedie ", command_, ": --", name, " expects an integer, got '", v, "'");
  }
}

double Args::number(const std::string& name) const {
  std::string v = str(name);
  try {
    size_t pos = 0;
    double x = std::stod(v, &pos);
    if (pos != v.size() || !std::isfinite(x)) throw std::invalid_argument("");
    return x;
  } catch (const std::exception&) {
    fail("tweedie ", command_, ": --", name, " expects a finite number, got '", v, "'");
  }
}

std::string Args::help() const {
  std::ostringstream o;
  o << "usage: tweedie " << command_ << " " << usage_ << "\n\noptions:\n";
  for (auto& op : opts_) {
    std::string lhs = "  " + (op.short_name.empty() ? "    " : "-" + op.short_name + ", ") + "--" + op.name +
                      (op.flag ? "" : " V");
    o << lhs << std::string(lhs.size() < 28 ? 28 - lhs.size() : 1, ' ') << op.help;
    if (!op.dflt.empty()) o << " (default " << op.dflt << ")";
    o << "\n";
  }
  o << "  -h, --help                show this help\n";
  return o.str();
}

Progress::Progress(std::string label, int total, bool enabled)
    : label_(std::move(label)), total_(total), enabled_(enabled), start_(now()) {}

void Progress::update(int done, const std::string& extra) {
  if (!enabled_) return;
  double t = now(), el = t - start_;
  if (done < total_ && t - last_ < 0.1) return;  // at most 10 updates a second
  last_ = t;
  double rate = done > 0 ? done / el : 0;
  double eta = rate > 0 ? (total_ - done) / rate : 0;
  std::fprintf(stderr, "\r%s %d/%d  %.2f it/s  ETA %.0fs %s  ", label_.c_str(), done, total_, rate, eta, extra.c_str());
  std::fflush(stderr);
}

void Progress::finish() {
  if (!enabled_) return;
  std::fprintf(stderr, "\r%s %d/%d  done in %.2fs          \n", label_.c_str(), total_, total_, now() - start_);
}

}  // namespace tweedie::cli

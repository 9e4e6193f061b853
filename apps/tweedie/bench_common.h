// Helpers shared by the `tweedie bench` subcommands (cmd_bench_*.cpp).
#pragma once
#include <functional>
#include <string>
#include <vector>

namespace tweedie::cli {

// "a,b,,c" -> {"a", "b", "c"}.
std::vector<std::string> split(const std::string& s);
// "10,20,50" -> {10, 20, 50}, every entry an integer >= 1; Error naming the
// command, the option and the entry.
std::vector<int> positive_ints(const std::string& list, const char* cmd, const char* option);
// --nfe "10,20,50" -> {10, 20, 50}.
inline std::vector<int> nfe_budgets(const std::string& list, const char* cmd) { return positive_ints(list, cmd, "--nfe"); }

class Progress;

struct Timing {
  double median = 0, min = 0, max = 0;  // seconds per call
};
// One warm-up call, then `reps` repetitions of at least `min_time` seconds
// (at least one call each); each repetition's time per call, summarized.
// Advances `prog` to ++done after each repetition.
Timing measure(const std::function<void()>& call, int reps, double min_time, Progress& prog, int& done);

// The text after "key ... :" on the first line of `path` starting with key
// ("" = the first line); "unknown" when absent.
std::string first_line_with(const std::string& path, const std::string& key);
// The vector-ISA flags of /proc/cpuinfo that matter to the fast paths.
std::string cpu_flags();
// "CPU: model, N hardware threads (flags)" and the thread settings, one
// markdown bullet each, for the machine details under a bench table.
std::string machine_bullets(const std::string& load_at_start);

// "NAME (fnv1a64 HEX)": the file's name and a 64-bit FNV-1a hash of its
// bytes, so a result cache keyed by it follows the model's content, not where
// the checkout lies. Error naming the path when it cannot be read.
std::string file_identity(const std::string& path);

std::string fmt(const char* f, double v);
std::string fmt_time(double seconds);  // "1.23 s" or "456 ms"

}  // namespace tweedie::cli

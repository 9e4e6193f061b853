// Files: whole-file reads and atomic writes (temporary file, then rename), so
// no output is ever left half-written.
#pragma once
#include <functional>
#include <string>

namespace tweedie {

std::string read_file(const std::string& path);  // throws Error naming the path
// Write through a temporary file in the same directory, then rename over path.
void write_file_atomic(const std::string& path, const std::string& bytes);
// Same, with a writer that fills the temporary file path it is given.
void write_atomic_with(const std::string& path, const std::function<void(const std::string& tmp_path)>& writer);
bool is_directory(const std::string& path);
bool ends_with(const std::string& s, const std::string& suffix);

}  // namespace tweedie

// Files: whole-file reads and atomic writes (temporary file, then rename), so
// no output is ever left half-written.
#pragma once
#include <functional>
#include <memory>
#include <string>

namespace tweedie {

std::string read_file(const std::string& path);  // throws Error naming the path
// Write through a temporary file in the same directory, then rename over path.
void write_file_atomic(const std::string& path, const std::string& bytes);
// Same, with a writer that fills the temporary file path it is given.
void write_atomic_with(const std::string& path, const std::function<void(const std::string& tmp_path)>& writer);
bool is_directory(const std::string& path);

// A regular file mapped copy-on-write: writes through `data` go to private
// pages, never to the file. Unmapped when the last pointer goes.
struct MappedFile {
  char* data = nullptr;
  size_t size = 0;
  MappedFile() = default;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();
};
// Error naming the path if it cannot be opened, is not a regular file or is
// shorter than min_size bytes ("<path>: <too_short>" then).
std::shared_ptr<MappedFile> map_file(const std::string& path, size_t min_size = 0,
                                     const std::string& too_short = "file is too short");
bool ends_with(const std::string& s, const std::string& suffix);

}  // namespace tweedie

// Whole-file reads and atomic writes.
#include "tweedie/io/fs.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "tweedie/core/error.h"

namespace tweedie {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_directory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

MappedFile::~MappedFile() {
  if (data) munmap(data, size);
}

std::shared_ptr<MappedFile> map_file(const std::string& path, size_t min_size, const std::string& too_short) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) fail(path, ": cannot open (", std::strerror(errno), ")");
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, ": not a regular file");
  }
  auto m = std::make_shared<MappedFile>();
  m->size = size_t(st.st_size);
  if (m->size < min_size || m->size == 0) {
    ::close(fd);
    if (m->size < min_size) fail(path, ": ", too_short, " (", m->size, " bytes)");
    return m;
  }
  void* p = mmap(nullptr, m->size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) fail(path, ": cannot map (", std::strerror(errno), ")");
  m->data = static_cast<char*>(p);
  return m;
}

std::string read_file(const std::string& path) {
  if (is_directory(path)) fail(path, ": is a directory, expected a file");
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(path, ": cannot open (", std::strerror(errno), ")");
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) fail(path, ": read error");
  return ss.str();
}

void write_atomic_with(const std::string& path, const std::function<void(const std::string&)>& writer) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  try {
    writer(tmp);
  } catch (...) {
    std::remove(tmp.c_str());
    throw;
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    std::remove(tmp.c_str());
    fail(path, ": cannot write (", std::strerror(e), ")");
  }
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  write_atomic_with(path, [&](const std::string& tmp) {
    std::ofstream f(tmp, std::ios::binary);
    if (!f) fail(path, ": cannot create (", std::strerror(errno), ")");
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    f.close();
    if (!f) fail(path, ": write error");
  });
}

}  // namespace tweedie

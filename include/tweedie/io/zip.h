// ZIP archives (PKWARE APPNOTE 6.3): a read-only reader and a small writer,
// as needed for torch.save files (a ZIP of data.pkl + data/<key> storages).
//
// Reader: memory-maps the file (copy-on-write, so tensors built over it are
// writable without touching the file), reads the central directory (ZIP64
// end record, sizes and offsets when a field is 0xFFFFFFFF: torch.save files
// over 4 GB use it), and checks every offset and size against the file before
// reading: a truncated or corrupt archive is an Error naming the file and the
// entry, never an out-of-bounds read. Entries are stored (method 0: a view
// into the mapping, no copy) or deflated (method 8: inflated with zlib, CRC
// checked). Encrypted entries and multi-disk archives are rejected.
// Writer: stored entries, each one's data aligned to 64 bytes (as torch.save
// does, so tensors map in place), ZIP64 records when needed (or forced),
// optional deflate for small entries; written atomically (io/fs.h).
// Verified in tests/test_sd_checkpoint.cpp (Zip*): round trip, ZIP64, deflate,
// truncated and out-of-bounds archives.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace tweedie {

struct ZipEntry {
  std::string name;
  uint16_t method = 0;  // 0 stored, 8 deflate
  uint32_t crc32 = 0;
  uint64_t compressed_size = 0, size = 0;
  uint64_t data_offset = 0;  // where the (compressed) bytes start in the file
};

// The bytes of one entry; `owner` keeps them alive (the file mapping for a
// stored entry, an inflated buffer otherwise).
struct ZipBytes {
  const char* data = nullptr;
  size_t size = 0;
  std::shared_ptr<const void> owner;
  std::string_view view() const { return {data, size}; }
};

class ZipReader {
 public:
  explicit ZipReader(const std::string& path);
  const std::string& path() const { return path_; }
  const std::vector<ZipEntry>& entries() const { return entries_; }
  const ZipEntry* find(const std::string& name) const;  // nullptr if absent
  // Stored entries are not CRC-checked unless verify_crc (tensor data is
  // large); deflated ones always are.
  ZipBytes read(const ZipEntry& e, bool verify_crc = false) const;

 private:
  std::string path_;
  std::shared_ptr<const void> map_;  // the mapping; base_/size_ point into it
  const char* base_ = nullptr;
  uint64_t size_ = 0;
  std::vector<ZipEntry> entries_;
};

class ZipWriter {
 public:
  // Collects entries in memory-light form (the data is written at finish()).
  explicit ZipWriter(std::string path) : path_(std::move(path)) {}
  // `data` must stay valid until finish(). deflate: compress this entry.
  void add(const std::string& name, const void* data, size_t size, bool deflate = false);
  void add(const std::string& name, std::string bytes, bool deflate = false);
  // Writes the archive atomically. force_zip64: ZIP64 records even when small.
  void finish(bool force_zip64 = false);

 private:
  struct Pending {
    std::string name;
    const char* data;
    size_t size;
    bool deflate;
    std::shared_ptr<std::string> own;  // bytes held by the writer
  };
  std::string path_;
  std::vector<Pending> pending_;
};

}  // namespace tweedie

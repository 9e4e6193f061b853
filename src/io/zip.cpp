// ZIP reader (memory-mapped, bounds-checked, ZIP64, stored + deflate) and
// writer (stored with 64-byte aligned data, optional deflate, ZIP64), after
// PKWARE's APPNOTE 6.3: end of central directory (EOCD) record, ZIP64 EOCD
// locator and record, central directory headers, local headers.
#include "tweedie/io/zip.h"

#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>

#include "tweedie/core/error.h"
#include "tweedie/io/fs.h"

namespace tweedie {

namespace {

constexpr uint32_t kLocalSig = 0x04034b50, kCentralSig = 0x02014b50, kEocdSig = 0x06054b50,
                   kZip64EocdSig = 0x06064b50, kZip64LocatorSig = 0x07064b50;
constexpr uint64_t kMax32 = 0xffffffffu;

uint64_t le(const char* p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v |= uint64_t((unsigned char)p[i]) << (8 * i);
  return v;
}

// A read-only view of the mapped file whose every read is bounds-checked.
struct View {
  const std::string& path;
  const char* base;
  uint64_t size;
  const char* at(uint64_t off, uint64_t n, const char* what) const {
    if (off > size || n > size - off)
      fail(path, ": corrupt ZIP archive: ", what, " at byte ", off, " (+", n, ") lies outside the ", size,
           "-byte file (truncated?)");
    return base + off;
  }
  uint64_t u(uint64_t off, int n, const char* what) const { return le(at(off, n, what), n); }
};

uint32_t crc_of(const char* p, size_t n) {
  uLong c = crc32(0L, Z_NULL, 0);
  while (n > 0) {  // zlib takes uInt lengths
    const uInt k = uInt(std::min<size_t>(n, 1u << 30));
    c = crc32(c, reinterpret_cast<const Bytef*>(p), k);
    p += k;
    n -= k;
  }
  return uint32_t(c);
}

}  // namespace

ZipReader::ZipReader(const std::string& path) : path_(path) {
  auto map = map_file(path, 22, "not a ZIP archive: too short");
  base_ = map->data;
  size_ = map->size;
  map_ = map;
  const View v{path_, base_, size_};

  // End of central directory: the last signature within 64 KiB + 22 of the end.
  int64_t eocd = -1;
  const uint64_t lowest = size_ > 22 + 65535 ? size_ - 22 - 65535 : 0;
  for (uint64_t p = size_ - 22 + 1; p-- > lowest;)
    if (le(base_ + p, 4) == kEocdSig) {
      eocd = int64_t(p);
      break;
    }
  if (eocd < 0) fail(path, ": not a ZIP archive (no end of central directory record; truncated?)");
  uint64_t disk = v.u(eocd + 4, 2, "EOCD"), cd_disk = v.u(eocd + 6, 2, "EOCD");
  uint64_t count = v.u(eocd + 10, 2, "EOCD"), cd_size = v.u(eocd + 12, 4, "EOCD"),
           cd_off = v.u(eocd + 16, 4, "EOCD");
  if (eocd >= 20 && v.u(eocd - 20, 4, "ZIP64 locator") == kZip64LocatorSig) {
    const uint64_t z = v.u(eocd - 20 + 8, 8, "ZIP64 locator");
    if (v.u(z, 4, "ZIP64 end record") != kZip64EocdSig)
      fail(path, ": corrupt ZIP archive: no ZIP64 end record at byte ", z);
    disk = v.u(z + 16, 4, "ZIP64 end record");
    cd_disk = v.u(z + 20, 4, "ZIP64 end record");
    count = v.u(z + 32, 8, "ZIP64 end record");
    cd_size = v.u(z + 40, 8, "ZIP64 end record");
    cd_off = v.u(z + 48, 8, "ZIP64 end record");
  }
  if (disk != 0 || cd_disk != 0) fail(path, ": multi-disk ZIP archives are not supported");
  v.at(cd_off, cd_size, "central directory");
  if (count > cd_size / 46) fail(path, ": corrupt ZIP archive: ", count, " entries cannot fit a ", cd_size, "-byte central directory");

  std::set<std::string> names;
  uint64_t p = cd_off;
  entries_.reserve(count);
  for (uint64_t i = 0; i < count; ++i) {
    if (v.u(p, 4, "central directory entry") != kCentralSig)
      fail(path, ": corrupt ZIP archive: bad central directory entry ", i, " at byte ", p);
    const uint64_t flags = v.u(p + 8, 2, "central directory entry");
    ZipEntry e;
    e.method = uint16_t(v.u(p + 10, 2, "central directory entry"));
    e.crc32 = uint32_t(v.u(p + 16, 4, "central directory entry"));
    e.compressed_size = v.u(p + 20, 4, "central directory entry");
    e.size = v.u(p + 24, 4, "central directory entry");
    const uint64_t nlen = v.u(p + 28, 2, "central directory entry"), xlen = v.u(p + 30, 2, "central directory entry"),
                   clen = v.u(p + 32, 2, "central directory entry");
    uint64_t local = v.u(p + 42, 4, "central directory entry");
    e.name.assign(v.at(p + 46, nlen, "entry name"), nlen);
    // ZIP64 extended information: the 64-bit values of the fields set to 0xFFFFFFFF, in this order.
    const uint64_t xend = p + 46 + nlen + xlen;
    v.at(p + 46 + nlen, xlen, "extra field");
    for (uint64_t x = p + 46 + nlen; x + 4 <= xend;) {
      const uint64_t id = v.u(x, 2, "extra field"), len = v.u(x + 2, 2, "extra field");
      if (x + 4 + len > xend) fail(path, ": corrupt ZIP archive: extra field of '", e.name, "' overruns its header");
      if (id == 1) {
        uint64_t q = x + 4;
        auto next = [&](uint64_t& field) {
          if (field != kMax32) return;
          if (q + 8 > x + 4 + len) fail(path, ": corrupt ZIP archive: short ZIP64 field for '", e.name, "'");
          field = v.u(q, 8, "ZIP64 field");
          q += 8;
        };
        next(e.size);
        next(e.compressed_size);
        next(local);
      }
      x += 4 + len;
    }
    if (flags & 1) fail(path, ": entry '", e.name, "' is encrypted (not supported)");
    if (!names.insert(e.name).second) fail(path, ": corrupt ZIP archive: duplicate entry '", e.name, "'");
    if (v.u(local, 4, "local header") != kLocalSig)
      fail(path, ": corrupt ZIP archive: no local header for '", e.name, "' at byte ", local);
    e.data_offset = local + 30 + v.u(local + 26, 2, "local header") + v.u(local + 28, 2, "local header");
    v.at(e.data_offset, e.compressed_size, ("data of '" + e.name + "'").c_str());
    entries_.push_back(std::move(e));
    p += 46 + nlen + xlen + clen;
  }
}

const ZipEntry* ZipReader::find(const std::string& name) const {
  for (auto& e : entries_)
    if (e.name == name) return &e;
  return nullptr;
}

ZipBytes ZipReader::read(const ZipEntry& e, bool verify_crc) const {
  const View v{path_, base_, size_};
  const char* src = v.at(e.data_offset, e.compressed_size, ("data of '" + e.name + "'").c_str());
  ZipBytes out;
  if (e.method == 0) {
    if (e.size != e.compressed_size)
      fail(path_, ": corrupt ZIP archive: stored entry '", e.name, "' has size ", e.size, " != ", e.compressed_size);
    out.data = src;
    out.size = e.size;
    out.owner = map_;
    if (verify_crc && crc_of(src, e.size) != e.crc32) fail(path_, ": CRC mismatch in entry '", e.name, "'");
    return out;
  }
  if (e.method != 8) fail(path_, ": entry '", e.name, "' uses unsupported ZIP compression method ", e.method);
  // Deflate expands at most ~1032:1; a larger claimed size is corrupt.
  if (e.size > e.compressed_size * 1032 + 1024)
    fail(path_, ": corrupt ZIP archive: entry '", e.name, "' claims ", e.size, " bytes from ", e.compressed_size);
  auto buf = std::make_shared<std::string>(e.size, '\0');
  z_stream z{};
  if (inflateInit2(&z, -MAX_WBITS) != Z_OK) fail(path_, ": zlib inflateInit failed");
  uint64_t in_left = e.compressed_size, out_done = 0;
  const char* in = src;
  int rc = Z_OK;
  while (rc == Z_OK) {
    const uInt in_n = uInt(std::min<uint64_t>(in_left, 1u << 30));
    const uInt out_n = uInt(std::min<uint64_t>(e.size - out_done, 1u << 30));
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in));
    z.avail_in = in_n;
    z.next_out = reinterpret_cast<Bytef*>(&(*buf)[0] + out_done);
    z.avail_out = out_n;
    rc = inflate(&z, Z_NO_FLUSH);
    in += in_n - z.avail_in;
    in_left -= in_n - z.avail_in;
    out_done += out_n - z.avail_out;
    if (rc == Z_OK && z.avail_in == in_n && z.avail_out == out_n) rc = Z_BUF_ERROR;  // no progress
  }
  inflateEnd(&z);
  if (rc != Z_STREAM_END || out_done != e.size)
    fail(path_, ": corrupt ZIP archive: entry '", e.name, "' does not inflate to its ", e.size, " bytes");
  if (crc_of(buf->data(), buf->size()) != e.crc32) fail(path_, ": CRC mismatch in entry '", e.name, "'");
  out.data = buf->data();
  out.size = buf->size();
  out.owner = buf;
  return out;
}

// ---------------------------------------------------------------- writer

namespace {

void put(std::string& s, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) s.push_back(char((v >> (8 * i)) & 0xff));
}

std::string deflate_bytes(const char* p, size_t n, const std::string& name) {
  z_stream z{};
  if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    fail("zip: zlib deflateInit failed for '", name, "'");
  std::string out(deflateBound(&z, uLong(n)), '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(p));
  z.avail_in = uInt(n);
  z.next_out = reinterpret_cast<Bytef*>(&out[0]);
  z.avail_out = uInt(out.size());
  const int rc = deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  if (rc != Z_STREAM_END) fail("zip: deflate failed for '", name, "'");
  return out;
}

}  // namespace

void ZipWriter::add(const std::string& name, const void* data, size_t size, bool deflate) {
  check(!name.empty() && name.size() < 65535, "zip: bad entry name '", name, "'");
  check(!deflate || size < (size_t(1) << 30), "zip: entry '", name, "' is too large to deflate");
  pending_.push_back({name, static_cast<const char*>(data), size, deflate, nullptr});
}

void ZipWriter::add(const std::string& name, std::string bytes, bool deflate) {
  auto own = std::make_shared<std::string>(std::move(bytes));
  add(name, own->data(), own->size(), deflate);
  pending_.back().own = own;
}

void ZipWriter::finish(bool force_zip64) {
  write_atomic_with(path_, [&](const std::string& tmp) {
    std::ofstream f(tmp, std::ios::binary);
    if (!f) fail(path_, ": cannot create (", std::strerror(errno), ")");
    std::string central;
    uint64_t off = 0;
    for (auto& e : pending_) {
      std::string packed;
      const char* data = e.data;
      uint64_t csize = e.size;
      if (e.deflate) {
        packed = deflate_bytes(e.data, e.size, e.name);
        data = packed.data();
        csize = packed.size();
      }
      const uint32_t crc = crc_of(e.data, e.size);
      const bool z64 = force_zip64 || e.size >= kMax32 || csize >= kMax32 || off >= kMax32;
      std::string extra;
      if (z64) {  // local ZIP64 field: both sizes
        put(extra, 1, 2);
        put(extra, 16, 2);
        put(extra, e.size, 8);
        put(extra, csize, 8);
      }
      // Pad with an unknown extra field so the data starts on a 64-byte boundary.
      const uint64_t head = off + 30 + e.name.size() + extra.size();
      if (!e.deflate) {
        uint64_t pad = (64 - (head + 4) % 64) % 64;
        put(extra, 0x4246, 2);  // "FB", the id torch.save uses for its padding
        put(extra, pad, 2);
        extra.append(pad, 'Z');
      }
      std::string local;
      put(local, kLocalSig, 4);
      put(local, z64 ? 45 : 20, 2);
      put(local, 0, 2);
      put(local, e.deflate ? 8 : 0, 2);
      put(local, 0, 4);  // time, date
      put(local, crc, 4);
      put(local, z64 ? kMax32 : csize, 4);
      put(local, z64 ? kMax32 : e.size, 4);
      put(local, e.name.size(), 2);
      put(local, extra.size(), 2);
      local += e.name;
      local += extra;
      f.write(local.data(), local.size());
      f.write(data, std::streamsize(csize));

      std::string cextra;
      if (z64) {
        put(cextra, 1, 2);
        put(cextra, 24, 2);
        put(cextra, e.size, 8);
        put(cextra, csize, 8);
        put(cextra, off, 8);
      }
      put(central, kCentralSig, 4);
      put(central, z64 ? 45 : 20, 2);
      put(central, z64 ? 45 : 20, 2);
      put(central, 0, 2);
      put(central, e.deflate ? 8 : 0, 2);
      put(central, 0, 4);
      put(central, crc, 4);
      put(central, z64 ? kMax32 : csize, 4);
      put(central, z64 ? kMax32 : e.size, 4);
      put(central, e.name.size(), 2);
      put(central, cextra.size(), 2);
      put(central, 0, 2);  // comment
      put(central, 0, 2);  // disk
      put(central, 0, 2);  // internal attributes
      put(central, 0, 4);  // external attributes
      put(central, z64 ? kMax32 : off, 4);
      central += e.name;
      central += cextra;
      off += local.size() + csize;
    }
    const uint64_t cd_off = off, cd_size = central.size(), n = pending_.size();
    const bool z64 = force_zip64 || cd_off >= kMax32 || n >= 0xffff;
    std::string tail;
    if (z64) {
      put(tail, kZip64EocdSig, 4);
      put(tail, 44, 8);  // size of the rest of this record
      put(tail, 45, 2);
      put(tail, 45, 2);
      put(tail, 0, 4);
      put(tail, 0, 4);
      put(tail, n, 8);
      put(tail, n, 8);
      put(tail, cd_size, 8);
      put(tail, cd_off, 8);
      put(tail, kZip64LocatorSig, 4);
      put(tail, 0, 4);
      put(tail, cd_off + cd_size, 8);
      put(tail, 1, 4);
    }
    put(tail, kEocdSig, 4);
    put(tail, 0, 4);
    put(tail, z64 ? 0xffff : n, 2);
    put(tail, z64 ? 0xffff : n, 2);
    put(tail, z64 ? kMax32 : cd_size, 4);
    put(tail, z64 ? kMax32 : cd_off, 4);
    put(tail, 0, 2);
    f.write(central.data(), central.size());
    f.write(tail.data(), tail.size());
    f.close();
    if (!f) fail(path_, ": write error");
  });
  pending_.clear();
}

}  // namespace tweedie

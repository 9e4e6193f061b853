// safetensors: round trip, metadata, and every kind of malformed file is
// rejected with an error naming the problem (never an out-of-bounds read).
#include <gtest/gtest.h>

#include <fstream>

#include "tweedie/core/error.h"
#include "tweedie/io/fs.h"
#include "tweedie/io/safetensors.h"

using namespace tweedie;

namespace {

std::string tmp(const std::string& n) { return ::testing::TempDir() + "/st_" + n; }

std::string error_of(const std::string& path) {
  try {
    load_safetensors(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// A file with the given header JSON and data bytes.
std::string raw(const std::string& header, const std::string& data, int64_t claimed = -1) {
  uint64_t n = claimed >= 0 ? uint64_t(claimed) : header.size();
  std::string b(8, '\0');
  for (int i = 0; i < 8; ++i) b[i] = char((n >> (8 * i)) & 0xff);
  return b + header + data;
}

TEST(Safetensors, RoundTripAllDtypesAndMetadata) {
  std::vector<std::pair<std::string, torch::Tensor>> ts = {
      {"a.weight", torch::randn({3, 4})},
      {"b", torch::randn({2}, torch::kFloat64)},
      {"c", torch::randn({5}).to(torch::kFloat16)},
      {"d", torch::randn({2, 2}).to(torch::kBFloat16)},
      {"e", torch::arange(6, torch::kInt64).reshape({2, 3})},
      {"empty", torch::zeros({0, 3})},
      {"scalar", torch::tensor(3.5f)},
  };
  save_safetensors(tmp("rt.safetensors"), ts, {{"config", "{\"a\": 1}"}, {"format", "pt"}});
  auto r = load_safetensors(tmp("rt.safetensors"));
  ASSERT_EQ(r.tensors.size(), ts.size());
  for (auto& [k, v] : ts) {
    ASSERT_NE(r.find(k), nullptr) << k;
    EXPECT_EQ(r.at(k).scalar_type(), v.scalar_type()) << k;
    EXPECT_TRUE(torch::equal(r.at(k), v)) << k;
  }
  EXPECT_EQ(r.metadata.at("config"), "{\"a\": 1}");
  std::string bytes = read_file(tmp("rt.safetensors"));
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t((unsigned char)bytes[i]) << (8 * i);
  EXPECT_EQ(n % 8, 0u);  // header padded so the data section is aligned
  EXPECT_THROW(r.at("nope"), Error);
}

TEST(Safetensors, MalformedFilesAreRejected) {
  auto expect = [](const std::string& name, const std::string& bytes, const std::string& needle) {
    write_file_atomic(tmp(name), bytes);
    std::string e = error_of(tmp(name));
    EXPECT_NE(e.find(needle), std::string::npos) << name << ": '" << e << "' lacks '" << needle << "'";
    EXPECT_NE(e.find(tmp(name)), std::string::npos) << "error must name the file: " << e;
  };
  const std::string ok = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
  expect("short", "abc", "truncated");
  expect("hugeheader", raw(ok, std::string(8, '\0'), 1 << 30), "header size");
  expect("headerpastend", raw(ok, "", ok.size() + 100), "header size");
  expect("notjson", raw("{\"w\": [", std::string(8, '\0')), "not valid JSON");
  expect("notobject", raw("[1,2]", ""), "must be a JSON object");
  expect("truncdata", raw(ok, std::string(4, '\0')), "outside the 4-byte data section");
  expect("badsize", raw("{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", std::string(8, '\0')),
         "shape x dtype needs 12");
  expect("baddtype", raw("{\"w\":{\"dtype\":\"F7\",\"shape\":[2],\"data_offsets\":[0,8]}}", std::string(8, '\0')),
         "unsupported dtype 'F7'");
  expect("negshape", raw("{\"w\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", std::string(8, '\0')),
         "negative");
  expect("reversed", raw("{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", std::string(8, '\0')),
         "outside");
  expect("overlap",
         raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
             "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
             std::string(12, '\0')),
         "overlap");
  expect("dup",
         raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
             "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
             std::string(8, '\0')),
         "duplicate tensor name 'a'");
  expect("extrakey", raw("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"x\":1}}", std::string(8, '\0')),
         "exactly dtype, shape and data_offsets");
  expect("badmeta", raw("{\"__metadata__\":{\"a\":1}}", ""), "not a string");
  EXPECT_NE(error_of(tmp("does-not-exist")).find("cannot open"), std::string::npos);
}

TEST(Safetensors, TruncatedRealFile) {
  save_safetensors(tmp("t.safetensors"), {{"w", torch::randn({64, 64})}});
  std::string b = read_file(tmp("t.safetensors"));
  for (size_t cut : {b.size() - 1, b.size() / 2, size_t(20)}) {
    write_file_atomic(tmp("cut.safetensors"), b.substr(0, cut));
    EXPECT_NE(error_of(tmp("cut.safetensors")), "") << cut;
  }
}

}  // namespace

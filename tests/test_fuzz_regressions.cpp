// Inputs that crashed, hung or threw something other than tweedie::Error in
// the parsers, found with the libFuzzer targets in fuzz/ (scripts/fuzz.sh;
// fuzz/RESULTS.md), fed to the same entry points: each is now an Error that
// names the problem. The bytes are the reproducers' own (the long ones are
// built by a loop, their pattern being what matters).
// (The torch.save and YAML reproducers join this file with the fixes in
// src/io/pickle.cpp and src/io/yaml.cpp, committed with those files.)
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "testing.h"
#include "tweedie/core/error.h"
#include "tweedie/io/fs.h"
#include "tweedie/io/image.h"
#include "tweedie/io/npy.h"
#include "tweedie/io/pickle.h"
#include "tweedie/io/yaml.h"
#include "tweedie/io/zip.h"
#include "tweedie/models/clip_tokenizer.h"

using namespace tweedie;
using tweedie::testing::error_of;

namespace {

std::string tmp(const std::string& n) { return ::testing::TempDir() + "/fuzzreg_" + n; }

template <size_t N>
std::string bytes(const char (&lit)[N]) {
  return std::string(lit, N - 1);  // embedded NULs included
}

std::string npy_error(const std::string& name, const std::string& file) {
  write_file_atomic(tmp(name), file);
  return error_of([&] { load_npy(tmp(name)); });
}

// A shape entry wider than int64: std::stoll threw std::out_of_range (src/io/npy.cpp).
TEST(FuzzRegressions, NpyShapeEntryTooLongForInt64) {
  const std::string e = npy_error(
      "digits.npy",
      bytes("\223NUMPY\001\000M\000{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }\n"));
  EXPECT_NE(e.find("digits.npy: .npy shape too large"), std::string::npos) << e;
  // Leading zeros are not size.
  const std::string ok = npy_error(
      "zeros.npy",
      bytes("\223NUMPY\001\000M\000{'descr': '<f4', 'fortran_order': False, 'shape': (00000000000000000001,), }\n"
            "\000\000\200?"));
  EXPECT_EQ(ok, "");
}

// Two entries of 2^40: the element count overflowed int64 before the bound was checked (UBSan).
TEST(FuzzRegressions, NpyShapeProductOverflow) {
  const std::string e = npy_error(
      "overflow.npy",
      bytes("\223NUMPY\001\000T\000{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, "
            "1099511627776), }\n"));
  EXPECT_NE(e.find("overflow.npy: .npy shape too large"), std::string::npos) << e;
}

// A 60,000-byte header (format 2.0): std::regex recursed once per character and overflowed the stack.
TEST(FuzzRegressions, NpyHugeHeader) {
  std::string h = "{'descr': '" + std::string(60000, 'a') + "', 'fortran_order': False, 'shape': (1,), }\n";
  std::string file = bytes("\223NUMPY\002\000");
  for (int i = 0; i < 4; ++i) file += char((h.size() >> (8 * i)) & 0xff);
  const std::string e = npy_error("header.npy", file + h);
  EXPECT_NE(e.find("header.npy: .npy header of 60055 bytes is too long (at most 10000)"), std::string::npos) << e;
}

// A 69-byte PNG whose header claims 65536x65536 RGBA: read_png allocated the 16 GiB pixel buffer before
// libpng found the data missing (src/io/png.cpp).
TEST(FuzzRegressions, PngHeaderClaimsHugeImage) {
  const std::string path = tmp("huge.png");
  write_file_atomic(path, bytes("\211PNG\r\n\032\n\000\000\000\rIHDR\000\001\000\000\000\001\000\000\010\006\000\000\000l"
                                "\2040\343\000\000\000\014IDATx\234c`\240=\000\000\000d\000\001\206d<5\000\000\000\000IEND"
                                "\256B`\202"));
  const std::string e = error_of([&] { read_png(path); });
  EXPECT_NE(e.find("huge.png: malformed PNG (65536x65536 pixels cannot come from 69 bytes)"), std::string::npos) << e;
}

// The fuzzer's first PNG finding (a timeout: 39 s and 2 GB under ASan): 139 bytes whose tEXt chunk claims
// 0x6000001a bytes; libpng allocated the claimed length before finding the data missing (src/io/png.cpp).
TEST(FuzzRegressions, PngChunkLongerThanFile) {
  const std::string path = tmp("chunk.png");
  write_file_atomic(path, bytes("\211PNG\r\n\032\n\000\000\000\rIHDR\000\000\000\004\000\000\000\003\010\002\000\000\000;\2269"
                                "\221`\000\000\032tEXtparameters a cat, steps 20\002Z\004\374\000\000\000/IDATx\234c``\347\023"
                                "\225Q\3262\264\260w\363ed\346\022\224\220W\3235\261v\362\014`b\343\025\221V\32240\267s\365\011"
                                "\006\000b\305\005\332T\275\311\215\000\000\000\000IEB`\202"));
  const std::string e = error_of([&] { read_png(path); });
  EXPECT_NE(e.find("chunk.png: malformed PNG (chunk at byte 33 claims 1610612762 bytes, past the end of the 139-byte "
                   "file)"),
            std::string::npos)
      << e;
}

// A 4000-letter "word" (a prompt pasted without spaces): CLIP's byte-pair encoding makes one pass over the
// piece per merge, 20 s under ASan for this one (a timeout of fuzz_tokenizer), minutes for 40000 letters
// (src/models/clip_tokenizer.cpp). Needs the real vocabulary (../shared/clip-tokenizer).
TEST(FuzzRegressions, ClipTokenizerHugeWord) {
  const std::string dir = std::string(TWEEDIE_SOURCE_DIR) + "/../shared/clip-tokenizer";
  if (!std::ifstream(dir + "/vocab.json").good()) GTEST_SKIP() << "CLIP tokenizer files not found in " << dir;
  const ClipTokenizer tok(dir);
  std::string word;
  uint32_t r = 1;
  for (int i = 0; i < 4000; ++i) word += char('a' + (r = r * 1103515245 + 12345) % 26);
  const std::string e = error_of([&] { tok.encode("a photo of " + word); });
  EXPECT_NE(e.find("prompt: a word of 4000 bytes (letters or symbols without spaces) is too long to tokenize (at "
                   "most 1000)"),
            std::string::npos)
      << e;
  EXPECT_FALSE(tok.encode(word.substr(0, 1000)).empty());
}

// A 1.5 KB data.pkl: 17 dicts, each of the first 16 holding 10 keys that all refer (by memo) to the next one.
// Flattening the state dict visited 10^16 entries (a hang; with tensors at the bottom, unbounded memory).
TEST(FuzzRegressions, TorchSaveSharedDictsMultiply) {
  auto str = [](const std::string& s) { return "X" + std::string{char(s.size()), 0, 0, 0} + s; };  // BINUNICODE
  std::string pkl = bytes("\200\002}q\020");  // PROTO 2, D16 = {}, BINPUT 16
  for (int level = 15; level >= 0; --level) {
    pkl += "}q" + std::string(1, char(level)) + "(";  // D<level> = {}, BINPUT level, MARK
    for (int k = 0; k < 10; ++k) pkl += str("k" + std::to_string(k)) + "h" + std::string(1, char(level + 1));
    pkl += "u";                                   // SETITEMS: k0..k9 -> D<level+1>
    if (level > 0) pkl += "0";                    // POP (kept in the memo)
  }
  pkl += ".";
  ASSERT_EQ(pkl.size(), 1541u);
  const std::string path = tmp("shared.ckpt");
  ZipWriter w(path);
  w.add("archive/data.pkl", pkl);
  w.finish();
  const std::string e = error_of([&] { load_torch_file(path); });
  EXPECT_NE(e.find("shared.ckpt: more than 1048576 dict entries to read"), std::string::npos) << e;
}

// A 160 KB data.pkl: a list of 20000 references to one ("k", 1) pair, then 20000 times OrderedDict(that list):
// 400M dict entries, GBs and a minute under ASan before the copies were bounded (src/io/pickle.cpp).
TEST(FuzzRegressions, TorchSaveOneListCopiedOverAndOver) {
  auto str = [](const std::string& s) { return "X" + std::string{char(s.size()), 0, 0, 0} + s; };  // BINUNICODE
  std::string pkl = bytes("\200\002ccollections\nOrderedDict\nq\000");  // PROTO 2, GLOBAL, BINPUT 0
  pkl += str("k") + bytes("K\001\206q\0010");  // ("k", 1), BINPUT 1, POP
  pkl += bytes("]q\002(");                     // EMPTY_LIST, BINPUT 2, MARK
  for (int i = 0; i < 20000; ++i) pkl += bytes("h\001");  // BINGET 1
  pkl += bytes("e\205q\0030");                 // APPENDS, TUPLE1 (list,), BINPUT 3, POP
  for (int i = 0; i < 20000; ++i) pkl += bytes("h\000h\003R0");  // OrderedDict(list), POP
  pkl += "}.";
  ASSERT_EQ(pkl.size(), 160052u);
  const std::string path = tmp("copies.ckpt");
  ZipWriter w(path);
  w.add("archive/data.pkl", pkl);
  w.finish();
  const std::string e = error_of([&] { load_torch_file(path); });
  EXPECT_NE(e.find("copies.ckpt: malformed pickle at byte "), std::string::npos) << e;
  EXPECT_NE(e.find(": more values copied than a pickle of 160052 bytes can hold"), std::string::npos) << e;
  // A real torch.save file is far from the bound.
  EXPECT_FALSE(load_torch_file(tweedie::testing::source_path("tests/data/torch_save_sd.ckpt")).empty());
}

// One line of 100,000 "- " (a sequence in a sequence in ...): each level was a recursion and the stack
// overflowed (src/io/yaml.cpp).
TEST(FuzzRegressions, YamlDeeplyNestedBlockSequence) {
  std::string text;
  for (int i = 0; i < 100000; ++i) text += "- ";
  text += "x\n";
  const std::string e = error_of([&] { parse_yaml(text, "dashes.yaml"); });
  EXPECT_NE(e.find("dashes.yaml:1: blocks nested more than 64 deep"), std::string::npos) << e;
  // 64 levels are read.
  std::string ok;
  for (int i = 0; i < 63; ++i) ok += "- ";
  nlohmann::json j = parse_yaml(ok + "x\n", "ok.yaml");
  for (int i = 0; i < 63; ++i) j = nlohmann::json(j.at(0));
  EXPECT_EQ(j, "x");
}

}  // namespace

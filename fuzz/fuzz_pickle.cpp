// libFuzzer target: the safe unpickler and the torch.save reader.
//   input starting "PK": a torch.save ZIP as it is, through load_torch_file;
//   otherwise: the bytes are data.pkl; they are put into a torch.save ZIP
//   (archive/data.pkl, storages archive/data/0..3 of 1..64 bytes, written by
//   ZipWriter so the CRC is right) and read with load_torch_file, so the
//   unpickler, the storage loader and the state-dict flattening all run.
#include <torch/torch.h>

#include "fuzz_common.h"
#include "tweedie/core/error.h"
#include "tweedie/io/pickle.h"
#include "tweedie/io/zip.h"

namespace {

void read_all(const std::string& path) {
  auto tensors = tweedie::load_torch_file(path);
  for (auto& [name, t] : tensors)
    if (t.numel() <= (1 << 20)) (void)t.clone();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const bool zip = size >= 2 && data[0] == 'P' && data[1] == 'K';
  const std::string& path = zip ? fuzz::write_input("pickle", data, size) : fuzz::input_path("pickle");
  try {
    if (!zip) {
      static const std::string storage = [] {
        std::string s(64, '\0');
        for (size_t i = 0; i < s.size(); ++i) s[i] = char(i * 37 + 1);
        return s;
      }();
      tweedie::ZipWriter w(path);
      w.add("archive/data.pkl", std::string(reinterpret_cast<const char*>(data), size));
      w.add("archive/byteorder", std::string("little"));
      w.add("archive/data/0", storage.data(), 64);
      w.add("archive/data/1", storage.data(), 16);
      w.add("archive/data/2", storage.data() + 1, 7);  // unaligned
      w.add("archive/data/3", storage.data(), 1);
      w.finish();
    }
    read_all(path);
  } catch (const tweedie::Error& e) {
    fuzz::check_message(e.what());
  }
  return 0;
}

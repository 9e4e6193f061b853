// libFuzzer target: ZipReader (the ZIP container of torch.save files):
// central directory, ZIP64 records, every entry read with its CRC checked.
#include <cstring>

#include "fuzz_common.h"
#include "tweedie/core/error.h"
#include "tweedie/io/zip.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = fuzz::write_input("zip", data, size);
  try {
    tweedie::ZipReader zip(path);
    for (const tweedie::ZipEntry& e : zip.entries()) {
      if (zip.find(e.name) == nullptr) std::abort();
      try {
        tweedie::ZipBytes b = zip.read(e, true);
        // Every byte of the entry must be readable.
        volatile unsigned sum = 0;
        for (size_t i = 0; i < b.size; ++i) sum += (unsigned char)b.data[i];
        (void)sum;
      } catch (const tweedie::Error& err) {
        fuzz::check_message(err.what());
      }
    }
  } catch (const tweedie::Error& e) {
    fuzz::check_message(e.what());
  }
  return 0;
}

#include "tweedie/core/runtime.h"

#include <dlfcn.h>
#include <malloc.h>

#include <cstdlib>
#include <thread>

#include <ATen/Parallel.h>

namespace tweedie {

void configure_threads(int threads) {
  if (threads <= 0 && !std::getenv("OMP_NUM_THREADS"))
    threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (threads > 0) at::set_num_threads(threads);
  if (!std::getenv("OPENBLAS_NUM_THREADS")) {
    // Looked up at run time: the BLAS behind libtorch may not be OpenBLAS.
    using SetThreads = void (*)(int);
    if (auto fn = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) fn(1);
  }
}

void configure_allocator() {
  // mallopt caps the mmap threshold at 32 MB, below a batch's activations, so
  // serve every block from the heap instead.
  if (!std::getenv("MALLOC_MMAP_THRESHOLD_") && !std::getenv("MALLOC_MMAP_MAX_")) mallopt(M_MMAP_MAX, 0);
  if (!std::getenv("MALLOC_TRIM_THRESHOLD_")) mallopt(M_TRIM_THRESHOLD, 1 << 30);
  if (!std::getenv("MALLOC_TOP_PAD_")) mallopt(M_TOP_PAD, 64 << 20);
}

}  // namespace tweedie

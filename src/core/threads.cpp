#include "tweedie/core/threads.h"

#include <dlfcn.h>

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

}  // namespace tweedie

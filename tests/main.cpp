// The test binary's entry point: the process set-up the `tweedie` CLI makes
// (one OpenBLAS thread, activations kept on the heap; tweedie/core/runtime.h),
// so the tests run the library as users of the CLI do. Without it the
// default-model tests spend much of their time in the kernel (measured in the
// README's Speed section). Torch gets one thread (unless OMP_NUM_THREADS says
// otherwise): ctest runs one test per core.
#include <gtest/gtest.h>

#include <cstdlib>

#include "tweedie/core/runtime.h"

int main(int argc, char** argv) {
  tweedie::configure_threads(std::getenv("OMP_NUM_THREADS") ? 0 : 1);
  tweedie::configure_allocator();
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}

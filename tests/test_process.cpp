#include <gtest/gtest.h>

#include "tweedie/process/prediction.h"
#include "tweedie/process/process.h"

using namespace tweedie;

TEST(Process, ScaledLinearTableMatchesStableDiffusion) {
  auto abar = alphas_cumprod({});
  // Stable Diffusion v1: alphas_cumprod[0] = 1 - 0.00085, last = 0.00466010.
  EXPECT_NEAR(abar[0], 1 - 0.00085, 1e-12);
  EXPECT_NEAR(abar[999], 0.0046600985130772, 1e-12);
  auto p = make_process("vp");
  EXPECT_NEAR(p->s_max(), 14.614641, 1e-5);
  EXPECT_NEAR(p->s_min(), 0.029167, 1e-5);
}

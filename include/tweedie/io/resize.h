// Image resizing as AUTOMATIC1111 does it for img2img inputs (modules/
// images.py resize_image), with Pillow's Lanczos filter (a = 3, the support
// widened by the scale when shrinking, so downsizing is antialiased; weights
// normalized per output pixel), applied separably to float images:
//   stretch  ("Just resize")     to exactly W x H, the aspect ratio changes
//   crop     ("Crop and resize") scaled to cover W x H, the centre cut out
//   fill     ("Resize and fill") scaled to fit inside W x H, centred; the
//            empty bands are filled with the image's edge rows / columns
//            stretched across them
// Verified in tests/test_io.cpp (Resize*): identity at the same size,
// constants stay constant, a Lanczos kernel computed by hand, the modes'
// geometry, bad input.
#pragma once
#include <string>

#include <torch/types.h>

namespace tweedie {

// One axis: out[.., i] = sum_j w_ij in[.., j] along `dim`, to `size` samples.
torch::Tensor lanczos_resize_axis(const torch::Tensor& x, int64_t dim, int64_t size);
// [N, C, H, W] (float) to [N, C, height, width] by mode "stretch", "crop" or "fill".
torch::Tensor resize_image(const torch::Tensor& nchw, int64_t height, int64_t width, const std::string& mode);

}  // namespace tweedie

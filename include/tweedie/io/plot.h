// Plots as PNG without dependencies: scatter plots and line charts (linear or
// log axes) with ticks, labels and a legend, drawn on a raster canvas with an
// embedded bitmap font.
#pragma once
#include <string>
#include <vector>

#include "tweedie/io/image.h"

namespace tweedie {

struct Series {
  std::string label;
  std::vector<double> x, y;
  bool points = false;  // markers only (scatter) instead of a line with markers
};

struct PlotOptions {
  std::string title, xlabel, ylabel;
  bool logx = false, logy = false;
  int width = 900, height = 600;
  double point_alpha = 1.0;  // scatter transparency for dense clouds
  int point_radius = 3;
  bool equal_aspect = false;
  bool legend = true;
};

Image plot(const std::vector<Series>& series, const PlotOptions& opt);

// make_grid's tiles, each enlarged `scale` times (nearest neighbour), with a
// header of column labels above and row labels to the left (either list may
// be empty; labels longer than the space are cut). RGB output.
Image labeled_grid(const torch::Tensor& nchw, int cols, const std::vector<std::string>& col_labels,
                   const std::vector<std::string>& row_labels, int scale = 2, double lo = -1, double hi = 1);

}  // namespace tweedie

// Raster plots: anti-aliased lines, markers, ticks and text from an embedded
// bitmap font. Enough for scatter plots of samples and error-vs-NFE charts.
#include "tweedie/io/plot.h"

#include <cmath>
#include <cstdio>

#include "tweedie/core/error.h"

namespace tweedie {
namespace {

#include "font.inc"

struct RGB {
  uint8_t r, g, b;
};
const RGB kPalette[] = {{31, 119, 180}, {255, 127, 14}, {44, 160, 44},  {214, 39, 40},  {148, 103, 189},
                        {140, 86, 75},  {227, 119, 194}, {127, 127, 127}, {188, 189, 34}, {23, 190, 207}};

class Canvas {
 public:
  Canvas(int w, int h) : img(w, h, 3, 255) {}
  Image img;

  void blend(int x, int y, RGB c, double a) {
    if (x < 0 || y < 0 || x >= img.width || y >= img.height || a <= 0) return;
    a = std::min(a, 1.0);
    uint8_t* p = img.at(x, y);
    p[0] = uint8_t(p[0] + (c.r - p[0]) * a);
    p[1] = uint8_t(p[1] + (c.g - p[1]) * a);
    p[2] = uint8_t(p[2] + (c.b - p[2]) * a);
  }
  // Line of the given width by distance to the segment (anti-aliased).
  void line(double x0, double y0, double x1, double y1, RGB c, double width = 1.5) {
    int xa = std::floor(std::min(x0, x1) - width), xb = std::ceil(std::max(x0, x1) + width);
    int ya = std::floor(std::min(y0, y1) - width), yb = std::ceil(std::max(y0, y1) + width);
    double dx = x1 - x0, dy = y1 - y0, L2 = dx * dx + dy * dy;
    for (int y = std::max(ya, 0); y <= std::min(yb, img.height - 1); ++y)
      for (int x = std::max(xa, 0); x <= std::min(xb, img.width - 1); ++x) {
        double t = L2 > 0 ? std::clamp(((x - x0) * dx + (y - y0) * dy) / L2, 0.0, 1.0) : 0;
        double d = std::hypot(x - (x0 + t * dx), y - (y0 + t * dy));
        blend(x, y, c, width / 2 + 0.5 - d);
      }
  }
  void disc(double cx, double cy, double r, RGB c, double alpha = 1.0) {
    for (int y = std::floor(cy - r - 1); y <= std::ceil(cy + r + 1); ++y)
      for (int x = std::floor(cx - r - 1); x <= std::ceil(cx + r + 1); ++x)
        blend(x, y, c, alpha * std::clamp(r + 0.5 - std::hypot(x - cx, y - cy), 0.0, 1.0));
  }
  void rect(int x0, int y0, int x1, int y1, RGB c) {
    for (int y = y0; y <= y1; ++y)
      for (int x = x0; x <= x1; ++x) blend(x, y, c, 1);
  }
  // Text with its top-left at (x, y); vertical = rotated 90 degrees counter-clockwise.
  void text(int x, int y, const std::string& s, RGB c = {0, 0, 0}, bool vertical = false) {
    for (size_t i = 0; i < s.size(); ++i) {
      unsigned char ch = s[i];
      if (ch < 32 || ch > 126) ch = '?';
      const char* g = kGlyphs[ch - 32];
      for (int gy = 0; gy < kGlyphH; ++gy)
        for (int gx = 0; gx < kGlyphW; ++gx) {
          char hx = g[gy * kGlyphW + gx];
          double a = (hx <= '9' ? hx - '0' : hx - 'a' + 10) / 15.0;
          if (vertical)
            blend(x + gy, y - int(i) * kGlyphW - gx, c, a);
          else
            blend(x + int(i) * kGlyphW + gx, y + gy, c, a);
        }
    }
  }
  static int text_width(const std::string& s) { return int(s.size()) * kGlyphW; }
};

std::string fmt(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%g", v);
  return b;
}

// "Nice" linear ticks covering [lo, hi].
std::vector<double> linear_ticks(double lo, double hi) {
  double span = hi - lo, raw = span / 6, mag = std::pow(10, std::floor(std::log10(raw)));
  double step = raw / mag < 1.5 ? mag : raw / mag < 3.5 ? 2 * mag : raw / mag < 7.5 ? 5 * mag : 10 * mag;
  std::vector<double> t;
  for (double v = std::ceil(lo / step) * step; v <= hi + 1e-9 * span; v += step) t.push_back(std::abs(v) < 1e-12 * span ? 0 : v);
  return t;
}

}  // namespace

Image plot(const std::vector<Series>& series, const PlotOptions& o) {
  check(o.width >= 200 && o.height >= 150, "plot: size too small");
  Canvas cv(o.width, o.height);
  double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
  auto tx = [&](double v) { return o.logx ? std::log10(v) : v; };
  auto ty = [&](double v) { return o.logy ? std::log10(v) : v; };
  auto usable = [&](double x, double y) {
    return std::isfinite(x) && std::isfinite(y) && (!o.logx || x > 0) && (!o.logy || y > 0);
  };
  for (auto& s : series)
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i)
      if (usable(s.x[i], s.y[i])) {
        xmin = std::min(xmin, tx(s.x[i])), xmax = std::max(xmax, tx(s.x[i]));
        ymin = std::min(ymin, ty(s.y[i])), ymax = std::max(ymax, ty(s.y[i]));
      }
  if (!std::isfinite(xmin)) xmin = 0, xmax = 1, ymin = 0, ymax = 1;
  if (xmax - xmin < 1e-12) xmin -= 0.5, xmax += 0.5;
  if (ymax - ymin < 1e-12) ymin -= 0.5, ymax += 0.5;
  if (o.logy) ymin = std::floor(ymin), ymax = std::ceil(ymax);
  else { double p = 0.04 * (ymax - ymin); ymin -= p, ymax += p; }
  if (o.logx) { double p = 0.03 * (xmax - xmin); xmin -= p, xmax += p; }
  else { double p = 0.04 * (xmax - xmin); xmin -= p, xmax += p; }
  const int L = 80, R = o.legend && series.size() > 1 ? 190 : 25, T = o.title.empty() ? 20 : 40, B = 55;
  int pw = o.width - L - R, ph = o.height - T - B;
  if (o.equal_aspect) {
    double sx = pw / (xmax - xmin), sy = ph / (ymax - ymin), s = std::min(sx, sy);
    double cx = (xmin + xmax) / 2, cy = (ymin + ymax) / 2;
    xmin = cx - pw / s / 2, xmax = cx + pw / s / 2, ymin = cy - ph / s / 2, ymax = cy + ph / s / 2;
  }
  auto px = [&](double v) { return L + (tx(v) - xmin) / (xmax - xmin) * pw; };
  auto py = [&](double v) { return T + ph - (ty(v) - ymin) / (ymax - ymin) * ph; };
  const RGB grid{225, 225, 225}, axis{60, 60, 60};
  // ticks and grid
  auto ticks = [&](bool log, double lo, double hi) {
    std::vector<double> t;
    if (log) {
      for (double e = std::ceil(lo); e <= std::floor(hi); ++e) t.push_back(std::pow(10, e));
      if (t.size() < 2)
        for (double e = std::floor(lo); e <= hi; ++e)
          for (double m : {2.0, 5.0})
            if (std::log10(m) + e >= lo && std::log10(m) + e <= hi) t.push_back(m * std::pow(10, e));
    } else {
      t = linear_ticks(lo, hi);
    }
    return t;
  };
  for (double v : ticks(o.logx, xmin, xmax)) {
    double x = px(v);
    cv.line(x, T, x, T + ph, grid, 1);
    std::string s = fmt(v);
    cv.text(int(x) - Canvas::text_width(s) / 2, T + ph + 6, s, axis);
  }
  for (double v : ticks(o.logy, ymin, ymax)) {
    double y = py(v);
    cv.line(L, y, L + pw, y, grid, 1);
    std::string s = fmt(v);
    cv.text(L - 6 - Canvas::text_width(s), int(y) - 6, s, axis);
  }
  cv.line(L, T, L, T + ph, axis, 1);
  cv.line(L, T + ph, L + pw, T + ph, axis, 1);
  cv.line(L + pw, T, L + pw, T + ph, axis, 1);
  cv.line(L, T, L + pw, T, axis, 1);
  if (!o.title.empty()) cv.text(L + pw / 2 - Canvas::text_width(o.title) / 2, 12, o.title);
  if (!o.xlabel.empty()) cv.text(L + pw / 2 - Canvas::text_width(o.xlabel) / 2, o.height - 24, o.xlabel);
  if (!o.ylabel.empty()) cv.text(14, T + ph / 2 + Canvas::text_width(o.ylabel) / 2, o.ylabel, {0, 0, 0}, true);
  // data (the axis ranges are padded, so nothing falls outside the frame)
  for (size_t k = 0; k < series.size(); ++k) {
    const Series& s = series[k];
    RGB c = kPalette[k % 10];
    bool have_prev = false;
    double qx = 0, qy = 0;
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      if (!usable(s.x[i], s.y[i])) {
        have_prev = false;
        continue;
      }
      double x = px(s.x[i]), y = py(s.y[i]);
      if (s.points) {
        cv.disc(x, y, o.point_radius, c, o.point_alpha);
      } else {
        if (have_prev) cv.line(qx, qy, x, y, c, 2);
        cv.disc(x, y, 2.5, c);
      }
      qx = x, qy = y, have_prev = true;
    }
  }
  if (o.legend && series.size() > 1) {
    int lx = L + pw + 12, ly = T + 4;
    for (size_t k = 0; k < series.size(); ++k, ly += 16) {
      RGB c = kPalette[k % 10];
      cv.rect(lx, ly + 4, lx + 14, ly + 8, c);
      cv.text(lx + 20, ly, series[k].label.substr(0, 22));
    }
  }
  return cv.img;
}

Image labeled_grid(const torch::Tensor& nchw, int cols, const std::vector<std::string>& col_labels,
                   const std::vector<std::string>& row_labels, int scale, double lo, double hi) {
  check(scale >= 1, "labeled grid: scale must be >= 1 (got ", scale, ")");
  const Image grid = make_grid(nchw, cols, lo, hi);
  const int n = int(nchw.size(0)), h = int(nchw.size(2)), w = int(nchw.size(3)), gap = 2;
  cols = std::max(1, std::min(cols, n));
  const int rows = (n + cols - 1) / cols, cell = (w + gap) * scale, pitch = (h + gap) * scale;
  size_t longest = 0;
  for (auto& s : row_labels) longest = std::max(longest, s.size());
  const int left = longest ? Canvas::text_width(std::string(longest, ' ')) + 8 : 0;
  const int top = col_labels.empty() ? 0 : kGlyphH + 6;
  Canvas cv(left + grid.width * scale, top + grid.height * scale);
  for (int y = 0; y < grid.height * scale; ++y)
    for (int x = 0; x < grid.width * scale; ++x) {
      const uint8_t* p = &grid.pixels[(size_t(y / scale) * grid.width + x / scale) * grid.channels];
      uint8_t* q = cv.img.at(left + x, top + y);
      for (int k = 0; k < 3; ++k) q[k] = p[grid.channels == 1 ? 0 : k];
    }
  const size_t fit = size_t(std::max(1, (cell - 2) / kGlyphW));
  for (int c = 0; c < cols && c < int(col_labels.size()); ++c) {
    const std::string s = col_labels[c].substr(0, fit);
    cv.text(left + gap * scale + c * cell + (w * scale - Canvas::text_width(s)) / 2, 3, s);
  }
  for (int r = 0; r < rows && r < int(row_labels.size()); ++r)
    cv.text(4, top + gap * scale + r * pitch + (h * scale - kGlyphH) / 2, row_labels[r]);
  return cv.img;
}

}  // namespace tweedie

// Training data and objective: IDX and image-folder datasets (including the
// real Fashion-MNIST files), the resumable data order, timestep samplers, loss
// weighting (closed forms and the cross-parameterization x0-space identity),
// batched targets and loss, condition dropout, EMA and learning-rate schedules.
#include <cstdio>  // before jpeglib.h

#include <jpeglib.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <set>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tweedie/core/error.h"
#include "tweedie/io/image.h"
#include "tweedie/process/prediction.h"
#include "tweedie/process/process.h"
#include "tweedie/train/dataset.h"
#include "tweedie/train/ema.h"
#include "tweedie/train/lr_schedule.h"
#include "tweedie/train/objective.h"

using namespace tweedie;
namespace fs = std::filesystem;

namespace {

std::string fresh_dir(const std::string& name) {
  const std::string d = ::testing::TempDir() + "/train_data_" + name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

void expect_error(const std::string& msg, std::initializer_list<std::string> parts) {
  for (auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
}

torch::Generator gen(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

// ---- IDX fixtures ----
std::string idx_bytes(int type, const std::vector<uint32_t>& dims, const std::vector<uint8_t>& data) {
  std::string b = {0, 0, char(type), char(dims.size())};
  for (uint32_t d : dims)
    for (int i = 3; i >= 0; --i) b += char((d >> (8 * i)) & 0xff);
  b.append(reinterpret_cast<const char*>(data.data()), data.size());
  return b;
}

void write_raw(const std::string& path, const std::string& bytes, bool gz) {
  if (gz) {
    gzFile f = gzopen(path.c_str(), "wb");
    ASSERT_NE(f, nullptr);
    ASSERT_EQ(gzwrite(f, bytes.data(), unsigned(bytes.size())), int(bytes.size()));
    gzclose(f);
  } else {
    std::ofstream(path, std::ios::binary) << bytes;
  }
}

std::string read_raw(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// ---- image fixtures ----
Image gradient(int w, int h, int c, int seed) {
  Image im(w, h, c);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int k = 0; k < c; ++k) im.at(x, y)[k] = uint8_t(20 + 5 * x + 6 * y + 20 * k + seed);  // < 256 for 16x12
  return im;
}

void write_jpeg(const std::string& path, const Image& im) {
  FILE* f = std::fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  jpeg_compress_struct c;
  jpeg_error_mgr err;
  c.err = jpeg_std_error(&err);
  jpeg_create_compress(&c);
  jpeg_stdio_dest(&c, f);
  c.image_width = im.width;
  c.image_height = im.height;
  c.input_components = im.channels;
  c.in_color_space = im.channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&c);
  jpeg_set_quality(&c, 95, TRUE);
  jpeg_start_compress(&c, TRUE);
  while (c.next_scanline < c.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(&im.pixels[size_t(c.next_scanline) * im.width * im.channels]);
    jpeg_write_scanlines(&c, &row, 1);
  }
  jpeg_finish_compress(&c);
  jpeg_destroy_compress(&c);
  std::fclose(f);
}

// [C, H, W] uint8 of an Image.
torch::Tensor chw(const Image& im) {
  return torch::from_blob(const_cast<uint8_t*>(im.pixels.data()), {im.height, im.width, im.channels}, torch::kUInt8)
      .permute({2, 0, 1})
      .clone();
}

std::vector<std::string> all_processes() { return {"vp", "vp:cosine", "vp-cont", "ve", "edm", "flow"}; }

std::vector<PredKind> kinds_for(const Process& p) {
  std::vector<PredKind> k = {PredKind::Eps, PredKind::X0, PredKind::V, PredKind::Velocity, PredKind::Score};
  if (p.space() == Space::Plain) k.push_back(PredKind::EDM);
  return k;
}

}  // namespace

// ============================================================================ IDX

TEST(TrainDataIdx, FashionMnistRealFiles) {
  if (!fs::exists(fashion_mnist_dir() + "/train-images-idx3-ubyte.gz"))
    GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  Dataset train = load_fashion_mnist("train");
  ASSERT_EQ(train.images.sizes(), torch::IntArrayRef({60000, 1, 28, 28}));
  EXPECT_EQ(train.images.scalar_type(), torch::kUInt8);
  ASSERT_TRUE(train.labelled());
  EXPECT_EQ(train.num_classes(), 10);
  EXPECT_TRUE(torch::equal(torch::bincount(train.labels), torch::full({10}, 6000, torch::kInt64)));
  EXPECT_GT(train.images.to(torch::kFloat32).mean().item<double>(), 50);  // not all zeros
  Dataset test = load_fashion_mnist("test");
  ASSERT_EQ(test.images.sizes(), torch::IntArrayRef({10000, 1, 28, 28}));
  EXPECT_TRUE(torch::equal(torch::bincount(test.labels), torch::full({10}, 1000, torch::kInt64)));
  EXPECT_EQ(test.class_index("sneaker"), 7);
  EXPECT_EQ(load_dataset("fashion-mnist:test").size(), 10000);
  expect_error(error_of([] { load_fashion_mnist("valid"); }), {"split 'valid'", "train, test"});
}

TEST(TrainDataIdx, SmallFilesGzipAndPlain) {
  const std::string d = fresh_dir("idx_small");
  std::vector<uint8_t> pix(5 * 3 * 4), lab = {2, 0, 1, 2, 1};
  for (size_t i = 0; i < pix.size(); ++i) pix[i] = uint8_t(i * 7 + 3);
  for (bool gz : {true, false}) {
    const std::string ip = d + (gz ? "/i.gz" : "/i.idx"), lp = d + (gz ? "/l.gz" : "/l.idx");
    write_raw(ip, idx_bytes(0x08, {5, 3, 4}, pix), gz);
    write_raw(lp, idx_bytes(0x08, {5}, lab), gz);
    Dataset ds = load_idx(ip, lp, {"a", "b", "c"});
    ASSERT_EQ(ds.images.sizes(), torch::IntArrayRef({5, 1, 3, 4}));
    EXPECT_TRUE(torch::equal(ds.images.flatten(), torch::tensor(std::vector<int64_t>(pix.begin(), pix.end())).to(torch::kUInt8)));
    EXPECT_TRUE(torch::equal(ds.labels, torch::tensor({2, 0, 1, 2, 1}, torch::kInt64)));
    EXPECT_EQ(ds.class_index("C"), 2);
    // Without names: "0".."max".
    EXPECT_EQ(load_idx(ip, lp).class_names, (std::vector<std::string>{"0", "1", "2"}));
  }
}

TEST(TrainDataIdx, RejectsBadFiles) {
  const std::string d = fresh_dir("idx_bad");
  std::vector<uint8_t> pix(5 * 3 * 4, 9), lab = {0, 1, 2, 0, 1};
  const std::string good_i = d + "/good_i", good_l = d + "/good_l";
  write_raw(good_i, idx_bytes(0x08, {5, 3, 4}, pix), false);
  write_raw(good_l, idx_bytes(0x08, {5}, lab), false);

  // Truncated data, plain and gzip (a gzip stream cut in half).
  write_raw(d + "/trunc", idx_bytes(0x08, {5, 3, 4}, std::vector<uint8_t>(4 * 3 * 4, 9)), false);
  expect_error(error_of([&] { read_idx_images(d + "/trunc"); }), {d + "/trunc", "truncated", "promises 60"});
  std::vector<uint8_t> noise(5 * 30 * 40);  // incompressible, so half the .gz is half the data
  uint32_t r = 1;
  for (auto& v : noise) r = r * 1664525u + 1013904223u, v = uint8_t(r >> 24);
  write_raw(d + "/full.gz", idx_bytes(0x08, {5, 30, 40}, noise), true);
  EXPECT_EQ(read_idx_images(d + "/full.gz").sum().item<int64_t>(),
            std::accumulate(noise.begin(), noise.end(), int64_t(0)));
  const std::string gzb = read_raw(d + "/full.gz");
  write_raw(d + "/cut.gz", gzb.substr(0, gzb.size() / 2), false);
  expect_error(error_of([&] { read_idx_images(d + "/cut.gz"); }), {d + "/cut.gz", "truncated", "promises 6000"});
  // Truncated header.
  write_raw(d + "/hdr", std::string("\0\0\x08\x03\0\0", 6), false);
  expect_error(error_of([&] { read_idx_images(d + "/hdr"); }), {d + "/hdr", "truncated IDX header"});
  // Bad magic.
  std::string bad = idx_bytes(0x08, {5, 3, 4}, pix);
  bad[0] = 0x12;
  write_raw(d + "/magic", bad, false);
  expect_error(error_of([&] { read_idx_images(d + "/magic"); }), {d + "/magic", "bad magic number", "0x00000803"});
  // Unsupported element type, wrong dimension count, zero dimension, trailing bytes.
  write_raw(d + "/float", idx_bytes(0x0D, {5, 3, 4}, pix), false);
  expect_error(error_of([&] { read_idx_images(d + "/float"); }), {d + "/float", "element type 0xd"});
  expect_error(error_of([&] { read_idx_images(good_l); }), {good_l, "expected images", "found 1 dimensions"});
  expect_error(error_of([&] { read_idx_labels(good_i); }), {good_i, "expected labels", "found 3"});
  write_raw(d + "/zero", idx_bytes(0x08, {0, 3, 4}, {}), false);
  expect_error(error_of([&] { read_idx_images(d + "/zero"); }), {d + "/zero", "dimension 0 is zero"});
  auto extra = pix;
  extra.push_back(1);
  write_raw(d + "/extra", idx_bytes(0x08, {5, 3, 4}, extra), false);
  expect_error(error_of([&] { read_idx_images(d + "/extra"); }), {d + "/extra", "1 bytes of trailing data"});
  expect_error(error_of([&] { read_idx_images(d + "/missing"); }), {d + "/missing", "cannot open"});
  // Label count and range.
  write_raw(d + "/l4", idx_bytes(0x08, {4}, {0, 1, 2, 0}), false);
  expect_error(error_of([&] { load_idx(good_i, d + "/l4"); }), {d + "/l4", "4 labels for 5 images"});
  expect_error(error_of([&] { load_idx(good_i, good_l, {"a", "b"}); }),
               {good_l, "label 2 at index 2 is out of range for 2 classes"});
}

TEST(TrainDataIdx, ClassLookupPaddingAndConversion) {
  const auto& names = fashion_mnist_classes();
  ASSERT_EQ(names.size(), 10u);
  EXPECT_EQ(names.front(), "t-shirt");
  EXPECT_EQ(names.back(), "ankle-boot");
  EXPECT_EQ(class_index(names, "sneaker"), 7);
  EXPECT_EQ(class_index(names, "Ankle-Boot"), 9);
  EXPECT_EQ(class_index(names, "3"), 3);
  expect_error(error_of([&] { class_index(names, "10"); }), {"unknown class '10'", "t-shirt, trouser", "0-9"});
  expect_error(error_of([&] { class_index(names, "hat"); }), {"unknown class 'hat'", "ankle-boot"});

  Dataset ds;
  ds.images = torch::tensor({0, 255, 51, 204}, torch::kUInt8).view({1, 1, 2, 2});
  ds.labels = torch::tensor({0}, torch::kInt64);
  ds.class_names = {"x"};
  auto x = ds.batch_images(torch::tensor({0}, torch::kInt64));
  EXPECT_TRUE(torch::allclose(x.flatten(), torch::tensor({-1.0f, 1.0f, -0.6f, 0.6f}), 1e-6, 1e-6));
  Dataset p = ds.padded(2);
  ASSERT_EQ(p.images.sizes(), torch::IntArrayRef({1, 1, 6, 6}));
  EXPECT_EQ(p.images.sum().item<int64_t>(), 0 + 255 + 51 + 204);  // border is 0
  EXPECT_TRUE(torch::equal(p.images.index({0, 0, torch::indexing::Slice(2, 4), torch::indexing::Slice(2, 4)}),
                           ds.images[0][0]));
  EXPECT_EQ(p.batch_images(torch::tensor({0}, torch::kInt64))[0][0][0][0].item<float>(), -1.0f);
  EXPECT_TRUE(torch::equal(p.batch_labels(torch::tensor({0, 0}, torch::kInt64)), torch::tensor({0, 0}, torch::kInt64)));
}

// ============================================================================ image folders

TEST(TrainDataFolder, ClassSubfoldersPngAndJpeg) {
  const std::string d = fresh_dir("folder_classes");
  fs::create_directories(d + "/coat");
  fs::create_directories(d + "/bag");
  const Image a = gradient(16, 12, 3, 0), b = gradient(16, 12, 3, 5), g = gradient(16, 12, 1, 9),
              j = gradient(16, 12, 3, 2);
  write_png(d + "/bag/b.png", b);
  write_png(d + "/bag/a.png", a);
  write_png(d + "/coat/g.png", g);  // gray: replicated to RGB
  write_jpeg(d + "/coat/j.JPG", j);
  std::ofstream(d + "/coat/notes.txt") << "ignored";
  write_png(d + "/coat/.hidden.png", gradient(3, 3, 1, 0));  // ignored (hidden, wrong size)
  fs::create_directories(d + "/.cache");                     // ignored (hidden)

  Dataset ds = load_image_folder(d);
  EXPECT_EQ(ds.class_names, (std::vector<std::string>{"bag", "coat"}));
  ASSERT_EQ(ds.images.sizes(), torch::IntArrayRef({4, 3, 12, 16}));
  EXPECT_TRUE(torch::equal(ds.labels, torch::tensor({0, 0, 1, 1}, torch::kInt64)));
  EXPECT_TRUE(torch::equal(ds.images[0], chw(a)));  // sorted by name: a before b
  EXPECT_TRUE(torch::equal(ds.images[1], chw(b)));
  EXPECT_TRUE(torch::equal(ds.images[2], chw(g).expand({3, 12, 16})));
  // The JPEG decodes close to what was written (lossy, smooth image).
  auto err = (ds.images[3].to(torch::kInt32) - chw(j).to(torch::kInt32)).abs();
  EXPECT_LT(err.to(torch::kFloat32).mean().item<float>(), 3.0f);
  EXPECT_LE(err.max().item<int>(), 16);
  Image rj = read_image(d + "/coat/j.JPG");
  EXPECT_EQ(rj.channels, 3);
  EXPECT_EQ(rj.width, 16);
  EXPECT_EQ(load_dataset(d).size(), 4);

  // A gray JPEG stays one channel.
  write_jpeg(d + "/gray.jpg", g);
  EXPECT_EQ(read_jpeg(d + "/gray.jpg").channels, 1);
}

TEST(TrainDataFolder, FlatFolderAndChannelConversion) {
  const std::string d = fresh_dir("folder_flat");
  const Image g1 = gradient(5, 4, 1, 0), g2 = gradient(5, 4, 1, 40);
  write_png(d + "/1.png", g1);
  write_png(d + "/2.png", g2);
  Dataset ds = load_image_folder(d);
  EXPECT_FALSE(ds.labelled());
  EXPECT_TRUE(ds.class_names.empty());
  ASSERT_EQ(ds.images.sizes(), torch::IntArrayRef({2, 1, 4, 5}));
  EXPECT_TRUE(torch::equal(ds.images[1], chw(g2)));
  EXPECT_FALSE(ds.batch_labels(torch::tensor({0}, torch::kInt64)).defined());
  expect_error(error_of([&] { ds.class_index("x"); }), {"unlabelled"});
  FolderOptions rgb;
  rgb.channels = 3;
  EXPECT_EQ(load_image_folder(d, rgb).images.size(1), 3);
  // RGB forced to gray: BT.601 luma.
  Image c(5, 4, 3);
  for (size_t i = 0; i < c.pixels.size(); i += 3) c.pixels[i] = 200, c.pixels[i + 1] = 100, c.pixels[i + 2] = 50;
  write_png(d + "/3.png", c);
  FolderOptions gray;
  gray.channels = 1;
  Dataset gd = load_image_folder(d, gray);
  EXPECT_EQ(gd.images[2][0][0][0].item<uint8_t>(), uint8_t(std::lround(0.299 * 200 + 0.587 * 100 + 0.114 * 50)));
  EXPECT_EQ(load_image_folder(d).images.size(1), 3);  // auto: colour present -> RGB
  FolderOptions bad;
  bad.channels = 2;
  expect_error(error_of([&] { load_image_folder(d, bad); }), {"channels must be 0 (auto), 1 or 3"});
}

TEST(TrainDataFolder, Errors) {
  const std::string empty = fresh_dir("folder_empty");
  std::ofstream(empty + "/readme.txt") << "no images here";
  expect_error(error_of([&] { load_image_folder(empty); }), {empty, "no images"});
  expect_error(error_of([&] { load_image_folder(empty + "/nope"); }), {empty + "/nope", "not a directory"});
  expect_error(error_of([&] { load_dataset("not-a-dataset"); }), {"unknown dataset 'not-a-dataset'", "fashion-mnist"});

  const std::string mixed = fresh_dir("folder_mixed");
  write_png(mixed + "/a.png", gradient(8, 8, 1, 0));
  write_png(mixed + "/b.png", gradient(8, 8, 1, 0));
  write_png(mixed + "/c.png", gradient(9, 8, 1, 0));
  expect_error(error_of([&] { load_image_folder(mixed); }),
               {"images differ in size", mixed + "/a.png is 8x8", mixed + "/c.png is 9x8"});

  const std::string bad = fresh_dir("folder_corrupt");
  write_png(bad + "/a.png", gradient(8, 8, 3, 0));
  std::ofstream(bad + "/b.png", std::ios::binary) << std::string("\x89PNG\r\n\x1a\n", 8) << "garbage garbage garbage";
  expect_error(error_of([&] { load_image_folder(bad); }), {bad + "/b.png", "PNG"});
  fs::remove(bad + "/b.png");
  std::ofstream(bad + "/c.png") << "plain text";
  expect_error(error_of([&] { load_image_folder(bad); }), {bad + "/c.png", "not a PNG or JPEG"});
  fs::remove(bad + "/c.png");
  write_jpeg(bad + "/d.jpg", gradient(8, 8, 3, 0));
  EXPECT_NO_THROW(load_image_folder(bad));
  const std::string jb = read_raw(bad + "/d.jpg");
  write_raw(bad + "/d.jpg", jb.substr(0, jb.size() / 2), false);
  expect_error(error_of([&] { load_image_folder(bad); }), {bad + "/d.jpg", "corrupt JPEG"});

  const std::string cls = fresh_dir("folder_badclasses");
  fs::create_directories(cls + "/x");
  fs::create_directories(cls + "/y");
  write_png(cls + "/x/a.png", gradient(4, 4, 1, 0));
  expect_error(error_of([&] { load_image_folder(cls); }), {cls + "/y", "class folder has no images"});
  write_png(cls + "/y/a.png", gradient(4, 4, 1, 0));
  write_png(cls + "/top.png", gradient(4, 4, 1, 0));
  expect_error(error_of([&] { load_image_folder(cls); }), {cls + "/top.png", "top level"});
}

// ============================================================================ data order

TEST(TrainDataOrder, DeterministicAndEveryIndexOncePerEpoch) {
  DataOrder a(103, 10, 42, /*drop_last=*/false), b(103, 10, 42, false), c(103, 10, 43, false);
  EXPECT_EQ(a.batches_per_epoch(), 11);
  bool differs = false;
  for (int epoch = 0; epoch < 3; ++epoch) {
    std::vector<int64_t> seen;
    for (int k = 0; k < 11; ++k) {
      auto ia = a.next(), ib = b.next(), ic = c.next();
      EXPECT_TRUE(torch::equal(ia, ib));
      differs = differs || !torch::equal(ia, ic);
      EXPECT_EQ(ia.size(0), k < 10 ? 10 : 3);
      seen.insert(seen.end(), ia.data_ptr<int64_t>(), ia.data_ptr<int64_t>() + ia.size(0));
    }
    std::sort(seen.begin(), seen.end());
    std::vector<int64_t> all(103);
    std::iota(all.begin(), all.end(), 0);
    EXPECT_EQ(seen, all) << "epoch " << epoch;
    EXPECT_EQ(a.state().epoch, epoch);
  }
  EXPECT_TRUE(differs);
  EXPECT_NE(DataOrder::permutation(103, 42, 0), DataOrder::permutation(103, 42, 1));

  // drop_last: 10 full batches of distinct indices per epoch.
  DataOrder d(103, 10, 7);
  std::set<int64_t> s;
  for (int k = 0; k < 10; ++k) {
    auto i = d.next();
    ASSERT_EQ(i.size(0), 10);
    s.insert(i.data_ptr<int64_t>(), i.data_ptr<int64_t>() + 10);
  }
  EXPECT_EQ(s.size(), 100u);
  d.next();
  EXPECT_EQ(d.state().epoch, 1);
  expect_error(error_of([] { DataOrder(5, 6, 0); }), {"batch size 6 exceeds the dataset size 5"});
}

TEST(TrainDataOrder, ResumeContinuesIdentically) {
  DataOrder a(250, 32, 123);
  for (int k = 0; k < 17; ++k) a.next();  // crosses two epoch boundaries (7 batches per epoch)
  const auto st = a.state();
  EXPECT_EQ(st.epoch, 2);
  // Resume from the struct and from the checkpoint tensors.
  DataOrder b(250, 32, 999), c(250, 32, 0);
  b.restore(st);
  std::map<std::string, torch::Tensor> saved;
  for (auto& [k, v] : a.state_tensors()) saved[k] = v.clone();
  c.load_state([&](const std::string& k) -> const torch::Tensor* {
    auto it = saved.find(k);
    return it == saved.end() ? nullptr : &it->second;
  });
  for (int k = 0; k < 20; ++k) {
    auto ia = a.next();
    EXPECT_TRUE(torch::equal(ia, b.next()));
    EXPECT_TRUE(torch::equal(ia, c.next()));
  }
  DataOrder::State badst = st;
  badst.position = 251;
  expect_error(error_of([&] { b.restore(badst); }), {"position 251"});
}

TEST(TrainDataOrder, RandomHorizontalFlip) {
  auto x = torch::arange(64 * 2 * 3 * 4, torch::kFloat32).view({64, 2, 3, 4});
  auto y1 = random_hflip(x, gen(5)), y2 = random_hflip(x, gen(5));
  EXPECT_TRUE(torch::equal(y1, y2));
  int flipped = 0;
  for (int i = 0; i < 64; ++i) {
    const bool f = torch::equal(y1[i], x[i].flip({2}));
    EXPECT_TRUE(f || torch::equal(y1[i], x[i]));
    flipped += f;
  }
  EXPECT_GT(flipped, 16);
  EXPECT_LT(flipped, 48);
  EXPECT_TRUE(torch::equal(random_hflip(x, gen(1), 0.0), x));
  EXPECT_TRUE(torch::equal(random_hflip(x, gen(1), 1.0), x.flip({3})));
}

// ============================================================================ timestep sampling

TEST(TrainDataTimesteps, UniformDiscreteCoversTheTable) {
  auto proc = make_process("vp");
  const int64_t n = 100000;
  auto s = sample_levels({}, *proc, n, gen(1));
  ASSERT_EQ(s.scalar_type(), torch::kFloat64);
  std::vector<int64_t> hist(10, 0);
  int64_t lo = 1000, hi = -1;
  const double* sp = s.data_ptr<double>();
  for (int64_t k = 0; k < n; ++k) {
    const int64_t i = std::lround(proc->t_of(sp[k]));
    ASSERT_GE(i, 0);
    ASSERT_LE(i, 999);
    hist[size_t(i / 100)]++;
    lo = std::min(lo, i), hi = std::max(hi, i);
  }
  EXPECT_EQ(lo, 0);
  EXPECT_EQ(hi, 999);
  for (auto h : hist) EXPECT_NEAR(double(h), 10000.0, 500.0);  // ~5 sigma
  EXPECT_TRUE(torch::equal(s.slice(0, 0, 100), sample_levels({}, *proc, 100, gen(1))));
}

TEST(TrainDataTimesteps, UniformContinuousInModelTime) {
  auto flow = make_process("flow");
  TimestepSampler ts;
  ts.kind = timestep_sampling_from_string("uniform-continuous");
  auto s = sample_levels(ts, *flow, 50000, gen(2));
  EXPECT_NEAR(s.mean().item<double>(), (flow->s_min() + 1.0) / 2, 0.006);
  EXPECT_GE(s.min().item<double>(), flow->s_min());
  EXPECT_LE(s.max().item<double>(), 1.0);
  // EDM's model time is log(sigma)/4: uniform model time = log-uniform sigma.
  auto edm = make_process("edm");
  auto ls = sample_levels(ts, *edm, 50000, gen(3)).log();
  EXPECT_NEAR(ls.mean().item<double>(), (std::log(0.002) + std::log(80.0)) / 2, 0.05);
}

TEST(TrainDataTimesteps, LogitNormalAndLogNormal) {
  const int64_t n = 50000;
  auto flow = make_process("flow"), edm = make_process("edm");
  TimestepSampler ln;
  ln.kind = timestep_sampling_from_string("logit-normal");
  ln.logit_mean = 0.5;
  ln.clamp = false;  // compare the raw draws across processes
  auto t = sample_levels(ln, *flow, n, gen(4));
  EXPECT_NEAR(t.median().item<double>(), 1 / (1 + std::exp(-0.5)), 0.01);  // median = sigmoid(m)
  auto u = torch::logit(t);
  EXPECT_NEAR(u.mean().item<double>(), 0.5, 0.02);
  EXPECT_NEAR(u.std().item<double>(), 1.0, 0.02);
  // The same log-SNR distribution on EDM: ln sigma ~ N(m, s).
  auto ls = sample_levels(ln, *edm, n, gen(4)).log();
  EXPECT_NEAR(ls.mean().item<double>(), 0.5, 0.02);
  EXPECT_TRUE(torch::allclose(ls, u, 1e-9, 1e-9));  // same draws, same lambdas

  TimestepSampler en;
  en.kind = timestep_sampling_from_string("log-normal");
  en.clamp = false;
  auto es = sample_levels(en, *edm, n, gen(5)).log();
  EXPECT_NEAR(es.mean().item<double>(), -1.2, 0.03);
  EXPECT_NEAR(es.std().item<double>(), 1.2, 0.03);
  auto ft = sample_levels(en, *flow, n, gen(5));  // flow t = sigma / (1 + sigma)
  EXPECT_TRUE(torch::allclose(torch::logit(ft), es, 1e-9, 1e-9));
  // Clamped to the table's range on discrete VP.
  en.clamp = true;
  auto vp = make_process("vp");
  auto vs = sample_levels(en, *vp, n, gen(6));
  EXPECT_GE(vs.min().item<double>(), vp->s_min());
  EXPECT_LE(vs.max().item<double>(), vp->s_max());
  expect_error(error_of([] { timestep_sampling_from_string("cosine"); }), {"'cosine'", "logit-normal"});
}

// ============================================================================ weighting

TEST(TrainDataWeighting, ClosedForms) {
  auto vp = make_process("vp");
  std::vector<double> lv;
  for (int i = 0; i < 1000; i += 37) lv.push_back(vp->s_at_timestep(i));
  auto s = torch::tensor(lv, torch::kFloat64);
  auto snr_t = snr(*vp, s);
  EXPECT_TRUE(torch::allclose(snr_t, s.pow(-2), 1e-12, 0));  // VP: SNR = 1/s^2
  Weighting ms{weighting_from_string("min-snr")};
  EXPECT_EQ(ms.gamma, 5.0);
  auto want_eps = torch::clamp_max(snr_t, 5.0) / snr_t;
  auto want_v = torch::clamp_max(snr_t, 5.0) / (snr_t + 1);
  EXPECT_TRUE(torch::allclose(loss_weights(ms, {PredKind::Eps}, s, *vp), want_eps, 1e-10, 0));
  EXPECT_TRUE(torch::allclose(loss_weights(ms, {PredKind::V}, s, *vp), want_v, 1e-10, 0));
  EXPECT_TRUE(torch::allclose(loss_weights(ms, {PredKind::X0}, s, *vp), torch::clamp_max(snr_t, 5.0), 1e-10, 0));
  Weighting p2{weighting_from_string("p2")};
  EXPECT_TRUE(torch::allclose(loss_weights(p2, {PredKind::Eps}, s, *vp), 1 / (1 + snr_t), 1e-10, 0));
  EXPECT_TRUE(torch::equal(loss_weights({}, {PredKind::V}, s, *vp), torch::ones_like(s)));
  // EDM: weight 1 on F; lambda(sigma) = (sigma^2 + sd^2)/(sigma sd)^2 on x0.
  auto edm = make_process("edm");
  Weighting ew{weighting_from_string("edm")};
  Parameterization F{PredKind::EDM, 0.5};
  auto es = torch::exp(torch::linspace(std::log(0.002), std::log(80.0), 40, torch::kFloat64));
  EXPECT_TRUE(torch::allclose(loss_weights(ew, F, es, *edm), torch::ones_like(es), 1e-10, 0));
  for (double sg : {0.01, 0.5, 3.0, 60.0})
    EXPECT_NEAR(x0_space_weight(ew, {PredKind::X0, 0.5}, sg, *edm) / ((sg * sg + 0.25) / (sg * sg * 0.25)), 1.0, 1e-12);
  // Finite at flow t = 1 with eps prediction (limit min(SNR,g)/SNR -> 1).
  auto flow = make_process("flow");
  auto w1 = loss_weights(ms, {PredKind::Eps}, torch::tensor({1.0}, torch::kFloat64), *flow);
  EXPECT_NEAR(w1.item<double>(), 1.0, 1e-6);
  expect_error(error_of([] { weighting_from_string("snr"); }), {"'snr'", "min-snr, p2, edm"});
  Weighting badg = ms;
  badg.gamma = 0;
  expect_error(error_of([&] { loss_weights(badg, {PredKind::Eps}, s, *vp); }), {"gamma must be > 0"});
}

// The defining property: for one prediction error in x0 space, the weighted
// loss is the same in every parameterization (and equals W(SNR) |d|^2).
TEST(TrainDataWeighting, SameX0SpaceWeightInEveryParameterization) {
  torch::manual_seed(0);
  for (const auto& spec : all_processes()) {
    auto proc = make_process(spec);
    TimestepSampler ts;
    ts.kind = TimestepSampling::UniformContinuous;
    auto s = sample_levels(ts, *proc, 6, gen(11));
    auto x0 = torch::randn({6, 2, 3, 3}, torch::kFloat64), eps = torch::randn_like(x0);
    auto d = 0.1 * torch::randn_like(x0);
    auto x = add_noise(*proc, x0, eps, s);
    auto mse = d.pow(2).flatten(1).mean(1);
    for (auto wk : {WeightingKind::MinSNR, WeightingKind::P2, WeightingKind::EDM, WeightingKind::Uniform}) {
      Weighting w{wk};
      std::vector<torch::Tensor> losses;
      for (auto k : kinds_for(*proc)) {
        Parameterization p{k, 0.5};
        std::vector<torch::Tensor> outs;
        for (int i = 0; i < 6; ++i)
          outs.push_back(Prediction::from_x0(x0[i] + d[i], x[i], s[i].item<double>(), *proc).as(p));
        auto loss = training_loss(torch::stack(outs), x0, eps, s, p, *proc, w);
        std::vector<double> want(6);
        for (int i = 0; i < 6; ++i) want[i] = x0_space_weight(w, p, s[i].item<double>(), *proc);
        EXPECT_TRUE(torch::allclose(loss, torch::tensor(want, torch::kFloat64) * mse, 1e-8, 0))
            << spec << " " << to_string(wk) << " " << to_string(k);
        losses.push_back(loss);
      }
      for (size_t j = 1; j < losses.size(); ++j) {
        const bool same = torch::allclose(losses[j], losses[0], 1e-8, 0);
        if (wk == WeightingKind::Uniform)
          EXPECT_FALSE(same) << spec << ": the plain losses should differ between parameterizations";
        else
          EXPECT_TRUE(same) << spec << " " << to_string(wk) << " " << to_string(kinds_for(*proc)[j]) << " vs eps";
      }
    }
  }
}

// ============================================================================ targets and loss

TEST(TrainDataLoss, BatchedTargetsMatchPrediction) {
  torch::manual_seed(1);
  for (const auto& spec : all_processes()) {
    auto proc = make_process(spec);
    auto s = sample_levels({}, *proc, 5, gen(3));
    auto x0 = torch::randn({5, 3, 2, 2}, torch::kFloat64), eps = torch::randn_like(x0);
    auto x = add_noise(*proc, x0, eps, s);
    for (int i = 0; i < 5; ++i)
      EXPECT_TRUE(torch::allclose(x[i], proc->add_noise(x0[i], eps[i], s[i].item<double>()), 1e-14, 1e-14));
    for (auto k : kinds_for(*proc)) {
      Parameterization p{k, 0.5};
      auto t = training_target(p, x0, eps, s, *proc);
      for (int i = 0; i < 5; ++i)
        EXPECT_TRUE(torch::allclose(t[i], Prediction::target(p, x0[i], eps[i], s[i].item<double>(), *proc), 1e-11, 1e-11))
            << spec << " " << to_string(k);
    }
    // EDM's c_in where it applies, else c_in = 1.
    const Parameterization mp = proc->space() == Space::Plain ? Parameterization{PredKind::EDM, 0.5} : Parameterization{};
    auto mi = model_input(*proc, mp, x, s);
    for (int i = 0; i < 5; ++i) {
      const double si = s[i].item<double>();
      const double c = proc->model_scale(si) * mp.c_in(si);
      EXPECT_TRUE(torch::allclose(mi.x[i], x[i] * c, 1e-14, 1e-14));
      EXPECT_NEAR(mi.t[i].item<double>(), proc->t_of(si), 1e-12);
    }
  }
  auto flow = make_process("flow");
  auto z = torch::zeros({1, 2});
  expect_error(error_of([&] {
                 training_target({PredKind::EDM}, z, z, torch::tensor({0.5}, torch::kFloat64), *flow);
               }),
               {"EDM preconditioning", "flow"});
  expect_error(error_of([&] { training_target({}, z, z, torch::tensor({0.5, 0.4}, torch::kFloat64), *flow); }),
               {"one noise level per sample"});
}

TEST(TrainDataLoss, DefinitionAndGradient) {
  auto vp = make_process("vp");
  auto s = torch::tensor({0.1, 1.0, 5.0}, torch::kFloat64);
  auto x0 = torch::randn({3, 1, 4, 4}), eps = torch::randn({3, 1, 4, 4});
  auto out = torch::randn({3, 1, 4, 4}).requires_grad_(true);
  auto loss = training_loss(out, x0, eps, s, {PredKind::Eps}, *vp, {});
  EXPECT_EQ(loss.scalar_type(), torch::kFloat32);
  EXPECT_TRUE(torch::allclose(loss, (out - eps).pow(2).flatten(1).mean(1), 1e-6, 1e-6));
  Weighting ms{WeightingKind::MinSNR};
  auto wl = training_loss(out, x0, eps, s, {PredKind::Eps}, *vp, ms);
  auto snr_t = (1 / s.pow(2)).to(torch::kFloat32);
  EXPECT_TRUE(torch::allclose(wl, (out - eps).pow(2).flatten(1).mean(1) * torch::clamp_max(snr_t, 5) / snr_t, 1e-5, 1e-6));
  wl.sum().backward();
  ASSERT_TRUE(out.grad().defined());
  EXPECT_GT(out.grad().abs().sum().item<float>(), 0);
}

TEST(TrainDataLoss, ConditionDropout) {
  auto labels = torch::randint(0, 10, {20000}, torch::kInt64);
  EXPECT_TRUE(torch::equal(drop_labels(labels, 0.0, gen(1)), labels));
  EXPECT_TRUE(torch::equal(drop_labels(labels, 1.0, gen(1)), torch::full_like(labels, -1)));
  auto d = drop_labels(labels, 0.25, gen(2));
  EXPECT_TRUE(torch::equal(d, drop_labels(labels, 0.25, gen(2))));
  const double frac = d.eq(-1).to(torch::kFloat64).mean().item<double>();
  EXPECT_NEAR(frac, 0.25, 0.015);
  auto kept = d.ne(-1);
  EXPECT_TRUE(torch::equal(d.masked_select(kept), labels.masked_select(kept)));
  expect_error(error_of([&] { drop_labels(labels, 1.5, gen(1)); }), {"probability must be in [0, 1]"});
}

// ============================================================================ EMA

TEST(TrainDataEMA, ClosedFormAfterKUpdates) {
  torch::manual_seed(3);
  torch::nn::Linear lin(3, 2);
  auto& m = *lin;
  auto set_all = [&](double v) {
    torch::NoGradGuard ng;
    for (auto& p : m.parameters()) p.fill_(v);
  };
  std::vector<torch::Tensor> p0;
  for (auto& p : m.parameters()) p0.push_back(p.detach().clone());

  // Constant decay: shadow = c + d^k (p0 - c).
  EMA e(m, {0.9, EMA::Warmup::None});
  set_all(0.5);
  for (int k = 0; k < 7; ++k) e.update(m);
  EXPECT_EQ(e.updates(), 7);
  for (size_t i = 0; i < p0.size(); ++i)
    EXPECT_TRUE(torch::allclose(e.shadow()[i].second, 0.5 + std::pow(0.9, 7) * (p0[i] - 0.5), 1e-6, 1e-6));

  // Ratio warm-up (diffusers): d_1 = 0, d_k = min(decay, k / (9 + k)).
  EMA r(m, {0.999, EMA::Warmup::Ratio});
  EXPECT_EQ(r.decay_at(1), 0.0);
  EXPECT_DOUBLE_EQ(r.decay_at(2), 2.0 / 11.0);
  EXPECT_DOUBLE_EQ(r.decay_at(50), 50.0 / 59.0);
  EXPECT_DOUBLE_EQ(r.decay_at(1000000), 0.999);
  set_all(-1.0);
  r.update(m);  // d_1 = 0: shadow = -1
  set_all(2.0);
  double prod = 1;
  for (int k = 2; k <= 9; ++k) r.update(m), prod *= r.decay_at(k);
  for (auto& [n, t] : r.shadow()) EXPECT_TRUE(torch::allclose(t, torch::full_like(t, 2.0 + prod * (-1.0 - 2.0)), 1e-6, 1e-6));
  // Power warm-up: 1 - (1 + t/inv_gamma)^-power.
  EMA pw(m, {0.9999, EMA::Warmup::Power, 1.0, 2.0 / 3.0});
  EXPECT_DOUBLE_EQ(pw.decay_at(11), 1 - std::pow(11.0, -2.0 / 3.0));
}

TEST(TrainDataEMA, SwapAndState) {
  torch::nn::Linear lin(4, 3);
  auto& m = *lin;
  EMA e(m, {0.5, EMA::Warmup::None});
  {
    torch::NoGradGuard ng;
    for (auto& p : m.parameters()) p.add_(1.0);
  }
  e.update(m);
  std::vector<torch::Tensor> live;
  for (auto& p : m.parameters()) live.push_back(p.detach().clone());
  {
    EMAScope scope(e, m);
    size_t i = 0;
    for (auto& p : m.parameters()) EXPECT_TRUE(torch::equal(p, e.shadow()[i++].second));
    expect_error(error_of([&] { e.update(m); }), {"swapped in"});
  }
  size_t i = 0;
  for (auto& p : m.parameters()) EXPECT_TRUE(torch::equal(p, live[i++]));
  // Save / restore.
  std::map<std::string, torch::Tensor> saved;
  for (auto& [k, v] : e.state()) saved[k] = v.clone();
  EXPECT_TRUE(saved.count("ema.weight") && saved.count("ema.bias") && saved.count("ema.updates"));
  EMA f(m, {0.5, EMA::Warmup::None});
  auto lookup = [&](const std::string& k) -> const torch::Tensor* {
    auto it = saved.find(k);
    return it == saved.end() ? nullptr : &it->second;
  };
  f.load_state(lookup);
  EXPECT_EQ(f.updates(), 1);
  for (size_t j = 0; j < f.shadow().size(); ++j) EXPECT_TRUE(torch::equal(f.shadow()[j].second, e.shadow()[j].second));
  e.update(m), f.update(m);
  for (size_t j = 0; j < f.shadow().size(); ++j) EXPECT_TRUE(torch::equal(f.shadow()[j].second, e.shadow()[j].second));
  saved.erase("ema.bias");
  expect_error(error_of([&] { f.load_state(lookup); }), {"lacks 'ema.bias'"});
  torch::nn::Linear other(5, 3);
  expect_error(error_of([&] { e.copy_to(*other); }), {"'weight'", "shape"});
}

// ============================================================================ learning rate

TEST(TrainDataLR, ClosedForm) {
  LRSchedule c;
  c.kind = lr_kind_from_string("cosine");
  c.lr = 1e-3, c.warmup_steps = 10, c.total_steps = 110, c.min_lr = 1e-5;
  EXPECT_DOUBLE_EQ(lr_at(c, 0), 1e-4);
  EXPECT_DOUBLE_EQ(lr_at(c, 4), 5e-4);
  EXPECT_DOUBLE_EQ(lr_at(c, 9), 1e-3);
  EXPECT_DOUBLE_EQ(lr_at(c, 10), 1e-3);
  EXPECT_NEAR(lr_at(c, 60), 1e-5 + (1e-3 - 1e-5) * 0.5, 1e-15);
  EXPECT_NEAR(lr_at(c, 35), 1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + std::cos(M_PI * 0.25)), 1e-15);
  EXPECT_DOUBLE_EQ(lr_at(c, 110), 1e-5);
  EXPECT_DOUBLE_EQ(lr_at(c, 100000), 1e-5);
  LRSchedule k;
  k.kind = lr_kind_from_string("constant");
  k.lr = 2e-4, k.warmup_steps = 5;
  EXPECT_DOUBLE_EQ(lr_at(k, 2), 2e-4 * 3 / 5);
  EXPECT_DOUBLE_EQ(lr_at(k, 5), 2e-4);
  EXPECT_DOUBLE_EQ(lr_at(k, 1000000), 2e-4);
  LRSchedule bad = c;
  bad.total_steps = 10;
  expect_error(error_of([&] { lr_at(bad, 0); }), {"total steps (10) must exceed the warm-up steps (10)"});
  bad = c;
  bad.min_lr = 1;
  expect_error(error_of([&] { lr_at(bad, 0); }), {"min_lr"});
  expect_error(error_of([] { lr_kind_from_string("linear"); }), {"'linear'", "constant, cosine"});
}

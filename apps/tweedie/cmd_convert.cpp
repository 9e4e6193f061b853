// tweedie convert: a Stable Diffusion checkpoint from any form it loads in
// (LDM/SGM single file with or without its yaml, diffusers folder, tweedie
// file) to another (models/sd_export.h): the architecture is carried over,
// so a converted model gives the same images.
#include <cstdio>

#include "cli.h"
#include "tweedie/core/error.h"
#include "tweedie/io/state_dict.h"
#include "tweedie/models/sd_export.h"

namespace tweedie::cli {
namespace {

int run(int argc, char** argv) {
  Args a("convert", "-m MODEL -o OUT --to ldm|diffusers|tweedie [options]",
         {{"model", "m", false, "checkpoint: single file (.safetensors/.ckpt) or diffusers folder", ""},
          {"output", "o", false, "output: a .safetensors file (ldm, tweedie) or a new folder (diffusers)", ""},
          {"to", "", false, "form to write: ldm (single file + .yaml), diffusers (folder) or tweedie (single file, "
                            "architecture in its metadata)", ""},
          {"config", "", false, "single-file input: its architecture as an LDM/SGM .yaml or a tweedie .json", ""},
          {"prediction", "", false, "eps or v, when the input does not say", ""},
          {"tokenizer", "", false, "diffusers output: folder with vocab.json + merges.txt to copy into tokenizer/", ""},
          {"dtype", "", false, "convert floating weights: fp32, fp16 or bf16 (default: as stored)", ""},
          {"ema", "", true, "single LDM files: take the UNet from the EMA weights (model_ema.*)", ""}});
  if (!a.parse(argc, argv)) return 0;
  check(a.positional().empty(), "tweedie convert: unexpected argument '", a.positional().empty() ? "" : a.positional()[0], "'");
  check(a.has("model"), "tweedie convert: --model is required");
  check(a.has("output"), "tweedie convert: --output is required");
  check(a.has("to"), "tweedie convert: --to is required (ldm, diffusers or tweedie)");
  const SdForm form = sd_form_from_string(a.str("to"));
  SdLoadOptions lo;
  lo.config = a.str("config");
  lo.prediction = a.str("prediction");
  lo.use_ema = a.has("ema");
  SdSaveOptions so;
  so.tokenizer = a.str("tokenizer");
  if (a.has("dtype")) so.dtype = dtype_from_string(a.str("dtype"));
  const SdCheckpoint c = load_sd_checkpoint(a.str("model"), lo);
  std::fprintf(stderr, "%s: %s; architecture from %s\n", c.source.c_str(), c.describe().c_str(), c.config_source.c_str());
  save_sd_checkpoint(c, a.str("output"), form, so);
  std::fprintf(stderr, "wrote %s (%s)\n", a.str("output").c_str(), a.str("to").c_str());
  return 0;
}

CommandRegistrar reg({"convert", "an SD checkpoint to another form: ldm (+ yaml), diffusers folder, tweedie file", run});

}  // namespace
}  // namespace tweedie::cli

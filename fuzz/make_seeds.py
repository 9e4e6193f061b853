#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/): a few
small valid inputs per parser, from the Python standard library only.
Run from the repository root: python3 fuzz/make_seeds.py"""
import json
import os
import struct
import zipfile
import zlib
import io
import pickle
import collections

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---------------------------------------------------------------- safetensors
def safetensors(tensors, metadata=None, pad=True):
    header, blob = {}, b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(blob), len(blob) + len(raw)]}
        blob += raw
    if metadata is not None:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + blob


put("safetensors", "f32_two.safetensors", safetensors([
    ("a.weight", "F32", [2, 3], struct.pack("<6f", *range(6))),
    ("b", "F32", [], struct.pack("<f", 1.5))], {"format": "pt"}))
put("safetensors", "mixed.safetensors", safetensors([
    ("h", "F16", [4], struct.pack("<4e", 1, 2, 3, 4)),
    ("bf", "BF16", [2], b"\x80\x3f\x00\x40"),
    ("i", "I64", [2], struct.pack("<2q", 7, -1)),
    ("u8", "U8", [3], b"\x01\x02\x03"),
    ("bool", "BOOL", [1], b"\x01"),
    ("d", "F64", [1, 1], struct.pack("<d", 3.25)),
    ("e", "F32", [0, 4], b"")], {"tweedie.sd": "{\"family\": \"sd1\"}"}))
put("safetensors", "empty.safetensors", safetensors([], None, pad=False))

# ---------------------------------------------------------------- ZIP
def zip_bytes(entries, compression=zipfile.ZIP_STORED, zip64=False):
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", compression) as z:
        for name, data in entries:
            with z.open(name, "w", force_zip64=zip64) as f:
                f.write(data)
    return b.getvalue()


put("zip", "stored.zip", zip_bytes([("a/data.pkl", b"\x80\x02}q\x00."), ("a/data/0", b"\0" * 16)]))
put("zip", "deflated.zip", zip_bytes([("x.txt", b"hello " * 20), ("y", b"")], zipfile.ZIP_DEFLATED))
put("zip", "zip64.zip", zip_bytes([("big", b"abc" * 5)], zipfile.ZIP_STORED, zip64=True))

fixture = open(os.path.join(ROOT, "tests", "data", "torch_save_sd.ckpt"), "rb").read()
put("zip", "torch_save_sd.ckpt", fixture)

# ---------------------------------------------------------------- pickle / torch.save
put("pickle", "torch_save_sd.ckpt", fixture)
with zipfile.ZipFile(io.BytesIO(fixture)) as z:
    for n in z.namelist():
        if n.endswith("/data.pkl"):
            put("pickle", "torch_save_sd.data.pkl", z.read(n))
put("pickle", "plain_dict.pkl", pickle.dumps({"a": 1, "b": [1.5, "x", None, True], "c": (b"by", -7, 2**70)}, protocol=2))
put("pickle", "ordered.pkl", pickle.dumps(collections.OrderedDict([("k", {"n": set([1])}), ("z", frozenset())]), protocol=2))
put("pickle", "proto4.pkl", pickle.dumps({"s": "é" * 3, "l": list(range(10)), "t": ()}, protocol=4))
put("pickle", "proto0.pkl", pickle.dumps({"a": [1, 2.0, "three"]}, protocol=0))

# ---------------------------------------------------------------- PNG
def png(w, h, color_type, bit_depth=8, text=None, rows=None, interlace=0):
    ch = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color_type]
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, interlace))
    if color_type == 3:
        out += chunk(b"PLTE", bytes([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255]))
    for k, v in (text or {}).items():
        out += chunk(b"tEXt", k.encode() + b"\0" + v.encode())
    bpp = ch * bit_depth // 8 if bit_depth >= 8 else 1
    raw = b""
    for y in range(h):
        raw += bytes([y % 5]) + bytes(((x * 7 + y * 3) & 0xff) for x in range(max(1, w * ch * bit_depth // 8)))
    out += chunk(b"IDAT", zlib.compress(raw))
    return out + chunk(b"IEND", b"")


put("png", "rgb.png", png(4, 3, 2, text={"parameters": "a cat, steps 20"}))
put("png", "gray.png", png(3, 2, 0))
put("png", "rgba.png", png(2, 2, 6))
put("png", "palette.png", png(3, 3, 3))
put("png", "gray_alpha.png", png(2, 3, 4))
put("png", "rgb16.png", png(2, 2, 2, bit_depth=16))
put("png", "interlaced.png", png(5, 5, 2, interlace=1))

# ---------------------------------------------------------------- npy
def npy(descr, shape, raw, fortran=False, version=1):
    h = "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (descr, "True" if fortran else "False",
                                                                  "(%s)" % "".join("%d," % s for s in shape) if len(shape) == 1 else str(tuple(shape)))
    pre = 10 if version == 1 else 12
    h += " " * ((64 - (pre + len(h) + 1) % 64) % 64) + "\n"
    if version == 1:
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h.encode() + raw
    return b"\x93NUMPY\x02\x00" + struct.pack("<I", len(h)) + h.encode() + raw


put("npy", "f4.npy", npy("<f4", [2, 3], struct.pack("<6f", *range(6))))
put("npy", "f8_fortran.npy", npy("<f8", [2, 2], struct.pack("<4d", 1, 2, 3, 4), fortran=True))
put("npy", "f2.npy", npy("<f2", [3], struct.pack("<3e", 1, 2, 3)))
put("npy", "i8_v2.npy", npy("<i8", [2], struct.pack("<2q", 5, -5), version=2))
put("npy", "i4_scalar.npy", npy("<i4", [], struct.pack("<i", 9)))

# ---------------------------------------------------------------- YAML
V1 = """model:
  base_learning_rate: 1.0e-04
  target: ldm.models.diffusion.ddpm.LatentDiffusion
  params:
    linear_start: 0.00085
    linear_end: 0.0120
    timesteps: 1000
    first_stage_key: "jpg"
    cond_stage_trainable: false   # a comment
    scale_factor: 0.18215
    use_ema: False
    scheduler_config: # 10000 warmup steps
      target: ldm.lr_scheduler.LambdaLinearScheduler
      params:
        warm_up_steps: [ 10000 ]
        f_start: [ 1.e-6 ]
    unet_config:
      target: ldm.modules.diffusionmodules.openaimodel.UNetModel
      params:
        attention_resolutions: [ 4, 2, 1 ]
        channel_mult: [ 1, 2, 4, 4 ]
        num_heads: 8
        use_spatial_transformer: True
        context_dim: 768
    first_stage_config:
      target: ldm.models.autoencoder.AutoencoderKL
      params:
        embed_dim: 4
        ddconfig:
          double_z: true
          ch_mult:
          - 1
          - 2
          attn_resolutions: []
          dropout: 0.0
    cond_stage_config:
      target: ldm.modules.encoders.modules.FrozenCLIPEmbedder
"""
XL = """---
model:
  target: sgm.models.diffusion.DiffusionEngine
  params:
    denoiser_config:
      params:
        scaling_config:
          target: sgm.modules.diffusionmodules.denoiser_scaling.VScaling
    conditioner_config:
      params:
        emb_models:
          - is_trainable: False
            input_key: txt
            target: sgm.modules.encoders.modules.FrozenCLIPEmbedder
            params: {layer: hidden, layer_idx: 11}
          - input_key: original_size_as_tuple
            target: sgm.modules.encoders.modules.ConcatTimestepEmbedderND
            params:
              outdim: 256
    flags: {a: 1, 'b c': [x, "y, z \\" \\n"], d: {}, e: ~, f: null, g: .5, h: -3.5e+2}
    empty: []
    list:
    - 1
    -
      - 2
      - 'it''s'
"""
put("yaml", "v1-inference.yaml", V1)
put("yaml", "sd_xl_base.yaml", XL)
put("yaml", "small.yaml", "a: 1\nb:\n  - x\n  - y: 2\n    z: [1, {q: r}]\nc: \"s\"\n")

# ---------------------------------------------------------------- JSON configs (first byte: 0 VAE, 1 CLIP text)
put("config", "vae.json", b"\x00" + json.dumps({"in_channels": 3, "out_ch": 3, "ch": 32, "ch_mult": [1, 2],
                                                  "num_res_blocks": 1, "z_channels": 4, "embed_dim": 4,
                                                  "use_quant_conv": True, "norm_groups": 8,
                                                  "scaling_factor": 0.18215}).encode())
put("config", "vae_sdxl.json", b"\x00" + b'{"preset": "sdxl"}')
put("config", "clip.json", b"\x01" + json.dumps({"vocab_size": 49408, "width": 64, "intermediate": 128,
                                                   "layers": 2, "heads": 4, "max_positions": 77,
                                                   "projection_dim": 32, "activation": "quick_gelu",
                                                   "layer_norm_eps": 1e-5}).encode())
put("config", "clip_empty.json", b"\x01{}")

# ---------------------------------------------------------------- prompts (first byte: options)
put("prompt", "a1111.txt", b"\x28" + "a (house:1.3) [in the [woods]] \\(escaped\\), ((very)) BREAK (red:0.5) sky".encode())
put("prompt", "long.txt", b"\x00" + ", ".join("word%d" % i for i in range(90)).encode())
put("prompt", "plain.txt", b"\x01" + "(not weighted) \u65e5\u672c caf\u00e9 :1.2)".encode())
put("prompt", "unbalanced.txt", b"\x40" + b"((a:1.2 [b] c) d ] e (f:0.9  ) BREAKx BREAK")

# ---------------------------------------------------------------- tokenizer
put("tokenizer", "ascii.txt", "A photograph of an astronaut riding a horse, 4k, highly-detailed!!! it's we'll")
put("tokenizer", "unicode.txt", "Caf\u00e9 \u65e5\u672c\u8a9e \uff21\uff22 \ufb01ne \u201cquoted\u201d &amp; &#x41; \u0130stanbul \U0001F600")
put("tokenizer", "special.txt", "<|startoftext|>hi<|endoftext|>  \t\n  \u3000 x\x00\x7f")

#!/usr/bin/python3
"""PyTorch eager reference timings for the Stable Diffusion 1.5 architecture.

Times the SD1.5 UNet forward (ldm / CompVis ``openaimodel.UNetModel``, 859,520,964
parameters) and the SD1.5 VAE decoder (ldm ``AutoencoderKL`` decoder plus
post_quant_conv) with random weights, written here in plain torch.nn (no
diffusers), so the numbers can be read next to ``tweedie bench sd``:

- UNet forward at 512x512 (latent 64x64) and 256x256 (latent 32x32), batch 1 and
  batch 2 (the classifier-free-guidance pair), timestep [B], context [B,77,768];
- VAE decode of a [1,4,64,64] latent to a [1,3,512,512] image;

each in fp32 (NCHW) and bf16 (model.to(torch.bfloat16), bf16 inputs), the latter in
both the contiguous (NCHW) and channels_last layouts. Every bf16 layout is checked
once per network against the fp32 output on the same weights and inputs (UNet at
256, batch 1; VAE on a 32x32 latent): relative error ||bf16 - fp32|| / ||fp32||.
The main table uses, per bf16 configuration, the fastest layout whose error is
below 0.05 (torch 1.13's bf16 GroupNorm is wrong in channels_last).

Each measurement: --warmup untimed runs, then --reps runs timed with
time.perf_counter under torch.inference_mode(); median, min and max are reported.
Peak RSS per measurement: VmHWM from /proc/self/status after writing "5" to
/proc/self/clear_refs just before the measurement (the weights are included).
GFLOP are counted on the run itself: 2 FLOP per multiply-add of every Conv2d,
Linear and attention matmul (QK^T and AV); norms, activations and softmax are not
counted.

Run (needs Debian's torch, ``apt-get install python3-torch``; CPU only):

    /usr/bin/python3 bench/sd_torch.py                      # full suite -> bench/results/sd_torch.md
    /usr/bin/python3 bench/sd_torch.py --only unet --sizes 256 --reps 2 --out /tmp/x
    /usr/bin/python3 bench/sd_torch.py --only vae --reps 2 --out /tmp/x

Progress goes to stderr; the markdown table is printed to stdout and written
atomically to DIR/sd_torch.md (rewritten after every measurement, so an
interrupted run leaves a partial table).
"""

import argparse
import math
import os
import shlex
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

UNET_PARAMS = 859_520_964
VAE_PARAMS_EXPECTED = 49_490_199
ERR_LIMIT = 0.05

# --------------------------------------------------------------------------------------
# FLOP counting (enabled only on one untimed run per configuration)

_flops = None  # None = not counting, else a one-element list


def _count_hook(mod, inp, out):
    if isinstance(mod, nn.Conv2d):
        k = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
        _flops[0] += 2 * out.numel() * k
    elif isinstance(mod, nn.Linear):
        _flops[0] += 2 * out.numel() * mod.in_features


def count_flops(model, fn):
    global _flops
    _flops = [0]
    hooks = [m.register_forward_hook(_count_hook) for m in model.modules()
             if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        fn()
    finally:
        for h in hooks:
            h.remove()
        n, _flops = _flops[0], None
    return n


def attention(q, k, v):
    """softmax(q k^T / sqrt(d)) v on [BH, N, d] tensors, plain bmm."""
    if _flops is not None:
        bh, nq, d = q.shape
        _flops[0] += 2 * bh * nq * k.shape[1] * d * 2
    w = torch.bmm(q, k.transpose(1, 2)) * (q.shape[-1] ** -0.5)
    return torch.bmm(w.softmax(dim=-1), v)


def like(x, ref):
    """x made contiguous in ref's memory format (NCHW or channels_last)."""
    if ref.dim() == 4 and not ref.is_contiguous() and ref.is_contiguous(memory_format=torch.channels_last):
        return x.contiguous(memory_format=torch.channels_last)
    return x.contiguous()


# --------------------------------------------------------------------------------------
# Shared blocks

class ResBlock(nn.Module):
    """GN-SiLU-conv3x3 (+ time embedding) GN-SiLU-conv3x3, 1x1 skip when channels change."""

    def __init__(self, cin, cout, temb=0, eps=1e-5):
        super().__init__()
        self.norm1 = nn.GroupNorm(32, cin, eps=eps)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(temb, cout) if temb else None
        self.norm2 = nn.GroupNorm(32, cout, eps=eps)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb=None):
        h = self.conv1(F.silu(self.norm1(x)))
        if self.emb is not None:
            h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Upsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


# --------------------------------------------------------------------------------------
# SD1.5 UNet (ldm openaimodel.UNetModel with SpatialTransformer depth 1)

class CrossAttention(nn.Module):
    def __init__(self, dim, heads, ctx_dim=None):
        super().__init__()
        ctx_dim = ctx_dim or dim
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(ctx_dim, dim, bias=False)
        self.to_v = nn.Linear(ctx_dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x, ctx=None):
        ctx = x if ctx is None else ctx
        b, n, c = x.shape
        h, d = self.heads, c // self.heads

        def split(t):
            return t.reshape(b, t.shape[1], h, d).permute(0, 2, 1, 3).reshape(b * h, t.shape[1], d)

        o = attention(split(self.to_q(x)), split(self.to_k(ctx)), split(self.to_v(ctx)))
        o = o.reshape(b, h, n, d).permute(0, 2, 1, 3).reshape(b, n, c)
        return self.to_out(o)


class GEGLUFeedForward(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.proj = nn.Linear(dim, 2 * 4 * dim)
        self.out = nn.Linear(4 * dim, dim)

    def forward(self, x):
        a, gate = self.proj(x).chunk(2, dim=-1)
        return self.out(a * F.gelu(gate))


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim, heads, ctx_dim):
        super().__init__()
        self.norm1, self.attn1 = nn.LayerNorm(dim), CrossAttention(dim, heads)
        self.norm2, self.attn2 = nn.LayerNorm(dim), CrossAttention(dim, heads, ctx_dim)
        self.norm3, self.ff = nn.LayerNorm(dim), GEGLUFeedForward(dim)

    def forward(self, x, ctx):
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), ctx)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    def __init__(self, ch, heads, ctx_dim):
        super().__init__()
        self.norm = nn.GroupNorm(32, ch, eps=1e-6)
        self.proj_in = nn.Conv2d(ch, ch, 1)
        self.block = BasicTransformerBlock(ch, heads, ctx_dim)
        self.proj_out = nn.Conv2d(ch, ch, 1)  # zero-initialised in ldm; random here

    def forward(self, x, ctx):
        b, c, hh, ww = x.shape
        h = self.proj_in(self.norm(x))
        h = h.permute(0, 2, 3, 1).reshape(b, hh * ww, c)
        h = self.block(h, ctx)
        h = like(h.reshape(b, hh, ww, c).permute(0, 3, 1, 2), x)
        return self.proj_out(h) + x


class EmbedSequential(nn.Sequential):
    def forward(self, x, emb, ctx):
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, ctx)
            else:
                x = layer(x)
        return x


def timestep_embedding(t, dim, max_period=10000):
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class UNet(nn.Module):
    def __init__(self, in_ch=4, mc=320, mult=(1, 2, 4, 4), nres=2, attn_ds=(1, 2, 4),
                 heads=8, ctx_dim=768):
        super().__init__()
        self.mc = mc
        ted = 4 * mc
        self.time_embed = nn.Sequential(nn.Linear(mc, ted), nn.SiLU(), nn.Linear(ted, ted))
        self.input_blocks = nn.ModuleList([EmbedSequential(nn.Conv2d(in_ch, mc, 3, padding=1))])
        chans, ch, ds = [mc], mc, 1
        for level, m in enumerate(mult):
            for _ in range(nres):
                layers = [ResBlock(ch, m * mc, ted)]
                ch = m * mc
                if ds in attn_ds:
                    layers.append(SpatialTransformer(ch, heads, ctx_dim))
                self.input_blocks.append(EmbedSequential(*layers))
                chans.append(ch)
            if level != len(mult) - 1:
                self.input_blocks.append(EmbedSequential(nn.Conv2d(ch, ch, 3, stride=2, padding=1)))
                chans.append(ch)
                ds *= 2
        self.middle_block = EmbedSequential(ResBlock(ch, ch, ted), SpatialTransformer(ch, heads, ctx_dim),
                                            ResBlock(ch, ch, ted))
        self.output_blocks = nn.ModuleList()
        for level, m in list(enumerate(mult))[::-1]:
            for i in range(nres + 1):
                layers = [ResBlock(ch + chans.pop(), m * mc, ted)]
                ch = m * mc
                if ds in attn_ds:
                    layers.append(SpatialTransformer(ch, heads, ctx_dim))
                if level and i == nres:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(EmbedSequential(*layers))
        self.out = nn.Sequential(nn.GroupNorm(32, ch), nn.SiLU(), nn.Conv2d(ch, in_ch, 3, padding=1))

    def forward(self, x, t, ctx):
        emb = self.time_embed(timestep_embedding(t, self.mc).to(x.dtype))
        hs, h = [], x
        for blk in self.input_blocks:
            h = blk(h, emb, ctx)
            hs.append(h)
        h = self.middle_block(h, emb, ctx)
        for blk in self.output_blocks:
            h = blk(torch.cat([h, hs.pop()], dim=1), emb, ctx)
        return self.out(h)


# --------------------------------------------------------------------------------------
# SD1.5 VAE decoder (ldm AutoencoderKL: post_quant_conv + Decoder)

class AttnBlock(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.norm = nn.GroupNorm(32, ch, eps=1e-6)
        self.q, self.k, self.v = (nn.Conv2d(ch, ch, 1) for _ in range(3))
        self.proj_out = nn.Conv2d(ch, ch, 1)

    def forward(self, x):
        b, c, hh, ww = x.shape
        h = self.norm(x)

        def tokens(t):  # [B, HW, C]
            return t.permute(0, 2, 3, 1).reshape(b, hh * ww, c)

        o = attention(tokens(self.q(h)), tokens(self.k(h)), tokens(self.v(h)))
        o = like(o.reshape(b, hh, ww, c).permute(0, 3, 1, 2), x)
        return x + self.proj_out(o)


class VAEDecoder(nn.Module):
    def __init__(self, ch=128, mult=(1, 2, 4, 4), nres=2, z_ch=4, out_ch=3, embed_dim=4):
        super().__init__()
        eps = 1e-6
        self.post_quant_conv = nn.Conv2d(embed_dim, z_ch, 1)
        bi = ch * mult[-1]
        self.conv_in = nn.Conv2d(z_ch, bi, 3, padding=1)
        self.mid = nn.Sequential(ResBlock(bi, bi, eps=eps), AttnBlock(bi), ResBlock(bi, bi, eps=eps))
        up = []
        for level in reversed(range(len(mult))):
            bo = ch * mult[level]
            for _ in range(nres + 1):
                up.append(ResBlock(bi, bo, eps=eps))
                bi = bo
            if level != 0:
                up.append(Upsample(bi))
        self.up = nn.Sequential(*up)
        self.norm_out = nn.GroupNorm(32, bi, eps=eps)
        self.conv_out = nn.Conv2d(bi, out_ch, 3, padding=1)

    def forward(self, z):
        h = self.conv_in(self.post_quant_conv(z))
        h = self.up(self.mid(h))
        return self.conv_out(F.silu(self.norm_out(h)))


# --------------------------------------------------------------------------------------
# Measurement

def log(*a):
    print(*a, file=sys.stderr, flush=True)


def reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def fmt_time(s):
    return f"{s * 1e3:.0f} ms" if s < 1.0 else f"{s:.2f} s"


def nparams(m):
    return sum(p.numel() for p in m.parameters())


def rel_err(out, ref):
    out = out.float()
    return ((out - ref).norm() / ref.norm()).item()


def set_layout(model, layout):
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    return model.to(memory_format=fmt)


def to_input(t, dtype, layout):
    t = t.to(dtype) if t.is_floating_point() else t
    if t.dim() == 4 and layout == "channels_last":
        t = t.contiguous(memory_format=torch.channels_last)
    return t


class Bench:
    def __init__(self, args, header):
        self.args = args
        self.header = header
        self.rows = []      # dicts
        self.notes = []     # strings
        self.flops = {}     # (net, size, batch) -> FLOPs
        self.errors = {}    # (net, layout) -> relative error
        self.clear_refs_ok = True

    def measure(self, net, size, batch, dtype, layout, model, inputs):
        key = (net, size, batch)
        fn = lambda: model(*inputs)  # noqa: E731
        self.clear_refs_ok &= reset_peak_rss()
        warm = self.args.warmup
        if key not in self.flops:
            self.flops[key] = count_flops(model, fn)
            warm -= 1
        for _ in range(max(warm, 0)):
            fn()
        times, cpu0 = [], time.process_time()
        for _ in range(self.args.reps):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        cpu = (time.process_time() - cpu0) / max(sum(times), 1e-9)
        row = dict(net=net, size=size, batch=batch, dtype=dtype, layout=layout,
                   median=statistics.median(times), min=min(times), max=max(times),
                   rss=peak_rss_mib(), flops=self.flops[key], cpu=cpu)
        self.rows.append(row)
        log(f"  {self.what(row)} {dtype} {layout}: median {fmt_time(row['median'])} "
            f"(min {fmt_time(row['min'])}, max {fmt_time(row['max'])}), peak RSS {row['rss']:.0f} MiB, "
            f"{row['flops'] / 1e9:.1f} GFLOP, CPU/wall {cpu:.2f}")
        self.write()

    @staticmethod
    def what(r):
        lat = r["size"] // 8
        if r["net"] == "unet":
            b = "batch 2 (CFG pair)" if r["batch"] == 2 else f"batch {r['batch']}"
            return f"UNet forward {r['size']}x{r['size']} (latent {lat}x{lat}), {b}"
        return f"VAE decode {lat}x{lat} latent -> {r['size']}x{r['size']}"

    def line(self, r, mark=""):
        gflop = r["flops"] / 1e9
        err = self.errors.get((r["net"], r["layout"])) if r["dtype"] == "bf16" else None
        err_s = "" if err is None else f"{err:.4f}"
        return (f"| {self.what(r)} | {r['dtype']} | {r['layout']}{mark} | {fmt_time(r['median'])} | "
                f"{fmt_time(r['min'])} | {fmt_time(r['max'])} | {r['rss']:.0f} | {gflop:.1f} | "
                f"{gflop / r['median']:.1f} | {r['cpu']:.2f} | {err_s} |")

    def chosen(self):
        """fp32 rows plus, per bf16 config, the fastest layout with error below ERR_LIMIT."""
        out, seen = [], set()
        for r in self.rows:
            if r["dtype"] != "bf16":
                out.append(r)
                continue
            key = (r["net"], r["size"], r["batch"])
            if key in seen:
                continue
            seen.add(key)
            ok = [x for x in self.rows if x["dtype"] == "bf16" and (x["net"], x["size"], x["batch"]) == key
                  and self.errors.get((x["net"], x["layout"]), 1.0) < ERR_LIMIT]
            if ok:
                out.append(min(ok, key=lambda x: x["median"]))
        return out

    def render(self):
        head = ("| what | dtype | layout | median | min | max | peak RSS MiB | GFLOP | GFLOP/s | CPU/wall "
                "| bf16 rel. err |\n"
                "|---|---|---|---|---|---|---|---|---|---|---|")
        s = [self.header, "", "## Main table", "",
             f"bf16 rows: the fastest layout whose relative error vs fp32 is below {ERR_LIMIT}.", "", head]
        s += [self.line(r) for r in self.chosen()]
        bf = [r for r in self.rows if r["dtype"] == "bf16"]
        if bf:
            s += ["", "## bf16, both layouts", "",
                  "Error = ||out_bf16 - out_fp32|| / ||out_fp32||, same weights and inputs, measured once per "
                  "network and layout (UNet: 256x256 batch 1; VAE: 32x32 latent). "
                  f"Rows marked * fail the {ERR_LIMIT} limit.", "", head]
            s += [self.line(r, "" if self.errors.get((r["net"], r["layout"]), 1.0) < ERR_LIMIT else " *")
                  for r in bf]
        if self.notes:
            s += ["", "## Notes", ""] + [f"- {n}" for n in self.notes]
        with open("/proc/loadavg") as f:
            s += ["", f"Load average when this file was written: {f.read().strip()}"]
        if not self.clear_refs_ok:
            s += ["", "Could not write /proc/self/clear_refs: peak RSS is the process peak so far."]
        return "\n".join(s) + "\n"

    def write(self):
        os.makedirs(self.args.out, exist_ok=True)
        path = os.path.join(self.args.out, "sd_torch.md")
        with open(path + ".tmp", "w") as f:
            f.write(self.render())
        os.replace(path + ".tmp", path)


def run_network(bench, net, args):
    torch.manual_seed(0)
    if net == "unet":
        model = UNet().eval()
        n = nparams(model)
        log(f"UNet parameters: {n:,}")
        assert n == UNET_PARAMS, f"UNet has {n:,} parameters, expected {UNET_PARAMS:,}"
        bench.notes.append(f"UNet parameters: {n:,} (the released SD1.5 UNet's count)")
        sizes, batches, check = args.sizes, args.batches, (256, 1)
    else:
        model = VAEDecoder().eval()
        n = nparams(model)
        log(f"VAE decoder + post_quant_conv parameters: {n:,}")
        match = "matches" if n == VAE_PARAMS_EXPECTED else "differs from"
        bench.notes.append(f"VAE decoder + post_quant_conv parameters: {n:,} ({match} the released SD1.5 "
                           f"VAE's decoder + post_quant_conv, {VAE_PARAMS_EXPECTED:,})")
        sizes, batches, check = args.vae_sizes, [1], (256, 1)

    def make_inputs(size, batch):  # fixed seed per (size, batch), whatever else is measured
        gen = torch.Generator().manual_seed(1000 * size + batch)
        lat = torch.randn(batch, 4, size // 8, size // 8, generator=gen)
        if net == "vae":
            return [lat]
        t = torch.full((batch,), 500, dtype=torch.long)
        ctx = torch.randn(batch, 77, 768, generator=gen)
        return [lat, t, ctx]

    configs = [(s, b) for s in sizes for b in batches]
    inputs = {c: make_inputs(*c) for c in configs + [check]}  # fp32 masters

    with torch.inference_mode():
        ref = None
        if "bf16" in args.dtype:
            log(f"{net}: fp32 reference at {check[0]} batch {check[1]}")
            ref = model(*inputs[check]).float()
            log(f"  reference output std {ref.std().item():.4f}, |mean| {ref.mean().abs().item():.4f}")
        if "fp32" in args.dtype:
            for s, b in configs:
                bench.measure(net, s, b, "fp32", "NCHW", model, inputs[(s, b)])
        if "bf16" in args.dtype:
            model.to(torch.bfloat16)
            for layout in ("NCHW", "channels_last"):
                set_layout(model, layout)
                out = model(*[to_input(t, torch.bfloat16, layout) for t in inputs[check]])
                err = rel_err(out, ref)
                bench.errors[(net, layout)] = err
                log(f"{net} bf16 {layout}: relative error vs fp32 {err:.4f}"
                    + ("" if err < ERR_LIMIT else f"  (above {ERR_LIMIT}: not used in the main table)"))
                for s, b in configs:
                    bench.measure(net, s, b, "bf16", layout, model,
                                  [to_input(t, torch.bfloat16, layout) for t in inputs[(s, b)]])
    del model


def csv_list(kind):
    def parse(s):
        return [kind(x) for x in s.split(",") if x]
    return parse


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--dtype", type=csv_list(str), default=["fp32", "bf16"], help="comma list of fp32,bf16")
    ap.add_argument("--sizes", type=csv_list(int), default=[512, 256], help="UNet image sizes (default 512,256)")
    ap.add_argument("--batches", type=csv_list(int), default=[1, 2], help="UNet batch sizes (default 1,2)")
    ap.add_argument("--vae-sizes", type=csv_list(int), default=[512], help="VAE output sizes (default 512)")
    ap.add_argument("--only", choices=["unet", "vae"])
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args()
    for d in args.dtype:
        if d not in ("fp32", "bf16"):
            ap.error(f"unknown dtype {d}")
    for s in args.sizes + args.vae_sizes:
        if s % 64:
            ap.error(f"size {s} is not a multiple of 64")

    torch.set_num_threads(args.threads)
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/loadavg") as f:
        load = f.read().strip()
    cmd = shlex.join([sys.executable] + sys.argv)
    header = "\n".join([
        "# Stable Diffusion 1.5 architecture, PyTorch eager (random weights)", "",
        f"`{cmd}`", "",
        f"- torch {torch.__version__}, threads {torch.get_num_threads()}, CPU: {cpu} ({os.cpu_count()} logical CPUs)",
        f"- load average at start (1, 5, 15 min, running/total, last pid): {load}",
        f"- {args.reps} timed runs after {args.warmup} warm-up, torch.inference_mode(); "
        "peak RSS = VmHWM after resetting it (/proc/self/clear_refs) before each measurement, weights included",
        "- GFLOP counted on the run: 2 per multiply-add of Conv2d, Linear and attention matmuls",
        f"- CPU/wall: process CPU time / wall time over the timed runs; about {args.threads} when this "
        "process had its threads' cores to itself, lower when other jobs took CPU time (timings then inflated)",
        f"- OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', '(unset)')}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(unset)')}",
    ])
    log(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu}, load {load}")
    bench = Bench(args, header)
    for net in ("unet", "vae"):
        if args.only in (None, net):
            run_network(bench, net, args)
    bench.write()
    print(bench.render(), end="")
    log(f"wrote {os.path.join(args.out, 'sd_torch.md')}")


if __name__ == "__main__":
    main()

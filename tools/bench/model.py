"""``recon bench model``: throughput, peak memory and FLOP rate of a full-size architecture with random weights.

Encoder and decoder (+ heads) are timed separately, as the inference engine runs them: every image is encoded
once, pairs are decoded in batches. A "pair" is two images for the encoder and one decoded pair for the
decoder. FLOPs come from ``recon.model.flops.count_flops`` (forward hooks during the first, untimed pass): an
analytic count from the shapes of every linear / convolution / attention matmul (it agrees exactly with
``torch.utils.flop_counter`` on MASt3R ViT-L), so TFLOP/s and MFU do not depend on what the kernels execute.
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)

# Dense peak TFLOP/s per (device-name substring, dtype) for the MFU column; spec-sheet values (SXM parts).
PEAK_TFLOPS = {
    ("H100", "bfloat16"): 989.0,
    ("H100", "float16"): 989.0,
    ("H100", "float32"): 494.5,  # TF32 tensor cores (float32 matmuls run as TF32 only if allowed)
    ("H200", "bfloat16"): 989.0,
    ("H200", "float16"): 989.0,
    ("H200", "float32"): 494.5,
    ("A100", "bfloat16"): 312.0,
    ("A100", "float16"): 312.0,
    ("A100", "float32"): 156.0,
}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "model",
        help="encoder / decoder throughput and peak memory of a full-size architecture (random weights)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", default="mast3r_vitl16", help="architecture (recon.model.presets.PRESETS)")
    p.add_argument("--size", type=int, help="image width in pixels (default: the model's native size)")
    p.add_argument("--height", type=int, help="image height (default: = width, square images)")
    p.add_argument("--batch", type=int, default=1, help="pairs per forward")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"), help="compute dtype")
    p.add_argument("--device", default="auto", help="auto (cuda when available) | cpu | cuda | cuda:K")
    p.add_argument("--iters", type=int, default=3, help="timed iterations per stage")
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations per stage (at least 1: counts FLOPs)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.set_defaults(func=run)


class _PeakMemory:
    """Peak memory of a block: CUDA allocator peak, or the process's peak RSS (VmHWM, reset before the block)."""

    def __init__(self, device):
        self.device = device

    def __enter__(self):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            try:  # Linux: writing 5 to clear_refs resets the peak RSS (VmHWM) of this process
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                logger.debug("cannot reset VmHWM: CPU peak memory is the process peak")
        return self

    def __exit__(self, *exc):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self.peak = _vm_hwm()


def _vm_hwm() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _time(fn, device, iters: int, warmup: int) -> tuple[float, float]:
    """Median wall-clock seconds and median process CPU seconds (all threads) of ``fn()``."""
    import time

    import torch

    for _ in range(warmup):
        fn()
    walls, cpus = [], []
    for _ in range(iters):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start, cpu = time.perf_counter(), time.process_time()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    return sorted(walls)[len(walls) // 2], sorted(cpus)[len(cpus) // 2]


def run(args) -> int:
    import torch

    from recon.errors import UserError
    from recon.model.flops import count_flops
    from recon.model.loading import cast_model
    from recon.model.presets import PRESETS, build_model

    if args.model not in PRESETS:
        raise UserError(f"unknown model {args.model!r}; known: {', '.join(sorted(PRESETS))}")
    if args.threads:
        torch.set_num_threads(args.threads)
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto if args.device == "auto" else args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but no CUDA device is available")
    dtype = getattr(torch, args.dtype)
    preset = PRESETS[args.model]
    width = args.size or preset.config.image_size
    height = args.height or width
    model = build_model(args.model, device=device)
    p = model.patch_size
    if width % p or height % p:
        raise UserError(f"image size {width}x{height} is not a multiple of the patch size {p}")
    model = cast_model(model, dtype if dtype != torch.float32 else None)
    B = args.batch
    n_params = sum(x.numel() for x in model.parameters())
    print(f"model {args.model}: {preset.description}; {n_params / 1e6:.1f} M parameters")
    print(
        f"input {width}x{height} (WxH), {B} pair(s) per forward, weights {args.dtype} (heads float32), "
        f"device {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}"
        + ("" if device.type == "cuda" else f", {torch.get_num_threads()} threads")
    )
    images = torch.rand(2 * B, 3, height, width, device=device)
    warmup = max(0, args.warmup - 1)  # the FLOP-counting pass is the first warm-up iteration
    with torch.inference_mode():
        with _PeakMemory(device) as mem_enc:
            flops_enc = count_flops(model, lambda: model.encode(images)) / B
            t_enc = _time(lambda: model.encode(images), device, args.iters, warmup)
        feats = model.encode(images)
        f1, f2 = feats[:B], feats[B:]

        def decode():
            return model.decode(f1, f2, (height, width), (height, width))

        with _PeakMemory(device) as mem_dec:
            flops_dec = count_flops(model, decode) / B
            t_dec = _time(decode, device, args.iters, warmup)

    peak = next((v for (gpu, dt), v in PEAK_TFLOPS.items() if dt == args.dtype and device.type == "cuda"
                 and gpu in torch.cuda.get_device_name(device)), None)  # fmt: skip
    cpu = device.type != "cuda"
    print(f"{'stage':<16}{'ms/iter':>10}{'pairs/s':>10}{'GFLOP/pair':>12}{'TFLOP/s':>9}{'peak mem GiB':>14}"
          + ("   MFU" if peak else "") + ("  CPU-s/iter" if cpu else ""))  # fmt: skip
    for stage, (t, t_cpu), flops, mem in (
        ("encoder (2 img)", t_enc, flops_enc, mem_enc.peak),
        ("decoder+heads", t_dec, flops_dec, mem_dec.peak),
    ):
        tflops = flops * B / t / 1e12
        line = f"{stage:<16}{t * 1e3:>10.1f}{B / t:>10.3f} {flops / 1e9:>11.4g} {tflops:>8.4g} {mem / 2**30:>13.2f}"
        if peak:
            line += f"{100 * tflops / peak:>6.1f}%"
        if cpu:
            line += f"{t_cpu:>12.2f}"
        print(line)
    print(f"encode + decode: {B / (t_enc[0] + t_dec[0]):.3f} pairs/s (the inference engine encodes each image once)")
    if cpu:
        print(
            "times are medians; CPU-s/iter = process CPU time over all threads (wall >> CPU-s / threads means "
            "the CPU was shared); peak memory = the process's peak RSS during the stage, weights included."
        )
    return 0

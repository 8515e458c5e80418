"""Render-time figures for the synthetic renderer: ``python -m tools.synth.bench [--size 512x384] [--views 6]``.

Prints wall-clock and process CPU time per view for each layout (scene construction excluded). Run it on an
otherwise idle machine with ``OMP_NUM_THREADS=1`` for one-core figures; numpy's element-wise work is
single-threaded anyway, only the few 3x3 matrix products could use a BLAS pool.
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np

logger = logging.getLogger(__name__)


def bench(layout: str, n_views: int, size: tuple[int, int], seed: int = 0) -> dict:
    """Median / min wall and CPU seconds per rendered view of ``layout``."""
    from tools.synth.render import render_view
    from tools.synth.scenes import make_scene

    scene, cams = make_scene(layout, n_views, size, seed)
    wall, cpu = [], []
    for cam in cams:
        t0, c0 = time.perf_counter(), time.process_time()
        render_view(scene, cam.K, cam.T_world_cam, cam.size, cam.name)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {
        "wall_median": float(np.median(wall)),
        "wall_min": float(np.min(wall)),
        "cpu_median": float(np.median(cpu)),
        "cpu_min": float(np.min(cpu)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="512x384", help="WxH (default 512x384)")
    parser.add_argument("--views", type=int, default=6, help="views per layout (default 6)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    W, H = (int(v) for v in args.size.lower().split("x"))
    from tools.synth.scenes import LAYOUTS

    print(f"render time per {W}x{H} view, {args.views} views per layout (seconds)")
    print(f"{'layout':<10} {'wall med':>9} {'wall min':>9} {'cpu med':>9} {'cpu min':>9}")
    for layout in LAYOUTS:
        r = bench(layout, args.views, (W, H), args.seed)
        print(f"{layout:<10} {r['wall_median']:9.3f} {r['wall_min']:9.3f} {r['cpu_median']:9.3f} {r['cpu_min']:9.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

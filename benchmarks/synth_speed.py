"""How fast synthetic scenes render (one process, one core's worth of numpy), in images per second.

    python benchmarks/synth_speed.py [--n 1000] [--size 96 128]

Prints the render rate and the time for N scenes; the goal is 1,000 scenes at 96x128 in well under
a minute on one core. Set OMP_NUM_THREADS=1 to pin numpy to one thread.
"""
from __future__ import annotations

import argparse
import time

from adapmtl.data import render_scene


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--size", type=int, nargs=2, default=[96, 128], metavar=("H", "W"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    size = (args.size[0], args.size[1])
    render_scene([args.seed, -1 % 2**31], size)  # warm-up
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    for i in range(args.n):
        render_scene([args.seed, i], size)
    wall, cpu = time.perf_counter() - start_wall, time.process_time() - start_cpu
    print(f"{args.n} scenes at {size[0]}x{size[1]}: {wall:.1f} s wall, {cpu:.1f} s CPU, "
          f"{args.n / wall:.0f} images/s ({1000 * wall / args.n:.1f} ms/image)")


if __name__ == "__main__":
    main()

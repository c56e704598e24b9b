"""data.resize's throughput: one thread against all cores (threads, and worker processes).

    python bench/bench_resize.py                    # 2000 JPEGs of 500x375 (dog-breeds-like) -> 128 px
    python bench/bench_resize.py --n 2000 --width 256 --height 256 --targ 83   # planet at sz 64

Generates the JPEGs in a temporary folder (bench_decode.make_jpegs), then in one run writes
the resized copies (`jaxcls.data.resize.resize_files`, what `data.resize` runs) into a fresh
folder per variant, best of interleaved repeats:
  * 1 thread;
  * all cores as threads (Pillow releases the GIL while decoding, resampling and encoding);
  * all cores as worker processes (a GIL each; what `data.resize` picks from
    PROCESS_MIN_FILES files and PROCESS_MIN_WORKERS cores);
and the target: parallel >= 0.8 x cores x the single-thread rate. CPU ms per image (this
process's and its finished worker processes') is the work each image costs whatever else
runs: equal across the variants, the parallel ones would reach cores x one thread on idle
cores; the load average says whether other processes shared them. Last, a second call over
finished copies (the resumed case: stat only, nothing rewritten).
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time

from bench_decode import make_jpegs

from jaxcls.data.resize import PROCESS_MIN_FILES, PROCESS_MIN_WORKERS, resize_files


def timed(fn, n):
    """(images/s, CPU seconds per image of this process and its finished children, result)."""
    def cpu():
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.process_time() + r.ru_utime + r.ru_stime
    t, c = time.perf_counter(), cpu()
    out = fn()
    return n / (time.perf_counter() - t), (cpu() - c) / n, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--n', type=int, default=2000, help='number of JPEGs (default 2000)')
    ap.add_argument('--width', type=int, default=500)
    ap.add_argument('--height', type=int, default=375)
    ap.add_argument('--targ', type=int, default=128, help="the copies' shorter side (default 128)")
    ap.add_argument('--workers', type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument('--repeats', type=int, default=3,
                    help='interleaved repeats; the best of each variant is reported (default 3)')
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0))  # the cores this process may run on
    tmp = tempfile.mkdtemp(prefix='jaxcls-bench-resize-')
    try:
        t = time.perf_counter()
        names = [f'imgs/{f}' for f in make_jpegs(os.path.join(tmp, 'imgs'), args.n, args.width,
                                                   args.height)]
        mb = sum(os.path.getsize(os.path.join(tmp, f)) for f in names) / 2**20
        print(f'generated {args.n} JPEGs {args.width}x{args.height} ({mb:.0f} MiB) in '
              f'{time.perf_counter() - t:.1f}s; copies at {args.targ} px; {cores} cores, '
              f'{args.workers} workers; best of {args.repeats} interleaved repeats')
        for f in names:  # warm the page cache so every variant reads from memory
            with open(os.path.join(tmp, f), 'rb') as fh:
                fh.read()
        variants = {'1 thread': dict(num_workers=1, processes=False),
                    f'{args.workers} threads': dict(num_workers=args.workers, processes=False),
                    f'{args.workers} processes': dict(num_workers=args.workers, processes=True)}
        load_before = os.getloadavg()[0]
        best: dict[str, tuple[float, float]] = {}
        for rep in range(args.repeats):
            for k, kw in variants.items():
                dest = os.path.join(tmp, f'out-{rep}-{k.replace(" ", "")}')
                rate, cpu, res = timed(lambda: resize_files(names, tmp, dest, args.targ, quiet=True,
                                                            **kw), args.n)
                assert res.written == args.n and not res.skipped, res
                if k not in best or rate > best[k][0]:
                    best[k] = (rate, cpu)
                last = dest
                if rep < args.repeats - 1:
                    shutil.rmtree(dest)
        load = os.getloadavg()[0]
        t = time.perf_counter()
        again = resize_files(names, tmp, last, args.targ, quiet=True)
        resumed = time.perf_counter() - t
        assert again.reused == args.n and again.written == 0

        print(f'load average before the timed runs: {load_before:.1f}, after: {load:.1f} '
              f'(above {cores} means other processes shared the cores)')
        print(f'{"resize_files":<20}{"img/s":>9}{"x 1 thread":>12}{"CPU ms/img":>12}')
        one = best['1 thread'][0]
        for k, (rate, cpu) in best.items():
            print(f'{k:<20}{rate:>9.0f}{rate / one:>12.2f}{cpu * 1e3:>12.2f}')
        target = 0.8 * cores * one
        for k in list(best)[1:]:
            rate = best[k][0]
            print(f'target 0.8 x {cores} x {one:.0f} = {target:.0f} img/s: {k}: '
                  f'{rate / (cores * one):.2f} x cores x 1 thread -> '
                  f'{"met" if rate >= target else "NOT met"}')
        procs = args.n >= PROCESS_MIN_FILES and args.workers >= PROCESS_MIN_WORKERS
        print(f'data.resize uses {"processes" if procs else "threads"} for {args.n} files and '
              f'{args.workers} workers (PROCESS_MIN_FILES = {PROCESS_MIN_FILES}, '
              f'PROCESS_MIN_WORKERS = {PROCESS_MIN_WORKERS})')
        print(f'resumed call over {args.n} finished copies: {resumed * 1e3:.0f} ms (stat only, '
              f'nothing rewritten)')
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    main()

"""Windows per second: parsing DSADS's 9,120 text files versus reading the window cache, side by side.

    python benchmarks/bench_data_cache.py [--archive ../shared/datasets/dsads.tar.xz] [--repeats 3]

Installs DSADS into a temporary data root, then times (1) parse text + window, cache off, and (2) load the
windows from the on-disk cache. Writes benchmarks/results/data_cache.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from harkd.data.catalog import load_windows
from harkd.data.install import install_dataset

HERE = Path(__file__).resolve().parent


def timed(fn, repeats: int) -> tuple[float, int]:
    times, n = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        n = len(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times), n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archive", type=Path, default=HERE.parents[1] / "shared" / "datasets" / "dsads.tar.xz")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "data_cache.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        install_dataset("dsads", str(args.archive), root=root)
        parse_s, n = timed(lambda: load_windows("dsads", root=root, cache=False), args.repeats)
        load_windows("dsads", root=root)  # fills the cache
        cache_s, n_cached = timed(lambda: load_windows("dsads", root=root), args.repeats)
    assert n == n_cached
    result = {
        "dataset": "dsads", "windows": n, "repeats": args.repeats,
        "parse_text_s": round(parse_s, 3), "parse_text_windows_per_s": round(n / parse_s),
        "cache_s": round(cache_s, 3), "cache_windows_per_s": round(n / cache_s),
        "speedup": round(parse_s / cache_s, 1),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, Python {platform.python_version()}",
        "command": "python benchmarks/bench_data_cache.py",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"DSADS {n} windows: parse text {result['parse_text_windows_per_s']:,} windows/s ({parse_s:.2f} s), "
          f"cache {result['cache_windows_per_s']:,} windows/s ({cache_s:.3f} s): {result['speedup']}x")


if __name__ == "__main__":
    main()

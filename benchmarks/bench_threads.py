"""Threads per process, alone and with the machine shared: why `harkd run` defaults to one torch thread per process.

    python benchmarks/bench_threads.py [--steps 40] [--limit 180]

Times the same training steps (the DSADS TSAK teacher, batch 64, 45 channels x 125 samples; forward, backward, AdamW)
in a fresh process on 1 and on 2 torch threads, first alone, then beside one busy process that keeps a core (another
job on the machine). A run over `--limit` seconds is stopped and reported as such. Writes
benchmarks/results/threads.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from harkd.environment import environment
from harkd.files import atomic_output

HERE = Path(__file__).resolve().parent
STEPS = """
import sys, time, torch
from harkd.models.base import build_model
torch.set_num_threads(int(sys.argv[1])); torch.manual_seed(0)
model = build_model("tsak_teacher", 45, 19, [list(range(i, i + 3)) for i in range(0, 45, 3)])
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
x, y = torch.randn(64, 45, 125), torch.randint(0, 19, (64,))
for step in range(int(sys.argv[2]) + 3):
    if step == 3: start = time.perf_counter()  # the first steps warm the allocator up
    loss = model.loss(model(x), y); opt.zero_grad(); loss.backward(); opt.step()
print(time.perf_counter() - start)
"""
BUSY = "while True: pass"


def timed(threads: int, steps: int, limit: float) -> float | None:
    """Seconds for `steps` training steps on `threads` threads; None when over `limit`."""
    try:
        done = subprocess.run([sys.executable, "-c", STEPS, str(threads), str(steps)], capture_output=True,
                              text=True, timeout=limit, check=True)
    except subprocess.TimeoutExpired:
        return None
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--limit", type=float, default=180.0, help="seconds before a run counts as collapsed")
    args = parser.parse_args()
    rows = []
    for shared in (False, True):
        busy = subprocess.Popen([sys.executable, "-c", BUSY]) if shared else None
        try:
            for threads in (1, 2):
                seconds = timed(threads, args.steps, args.limit)
                rows.append({"threads": threads, "shared": shared, "seconds": seconds,
                             "steps_per_s": None if seconds is None else round(args.steps / seconds, 2)})
                said = f"over {args.limit:.0f} s (stopped)" if seconds is None else \
                    f"{seconds:.1f} s, {args.steps / seconds:.2f} steps/s"
                print(f"{threads} thread(s), {'beside a busy process' if shared else 'alone'}: {said}", flush=True)
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()
    result = {"command": " ".join(["python", "benchmarks/bench_threads.py", *sys.argv[1:]]),
              "when": time.strftime("%Y-%m-%d %H:%M"), "machine": environment(), "steps": args.steps, "rows": rows}
    with atomic_output(HERE / "results" / "threads.json") as tmp:
        tmp.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()

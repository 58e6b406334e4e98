"""Wall time of one 6-run CPU sweep, run sequentially (one process, every thread) and with
`harness sweep --ray` on a local Ray instance (one CPU, one thread per run), in this one
script, each from an empty cache (so each trains its baselines).

    python benchmarks/ray_sweep_time.py

Prints both times and their ratio. The two sweeps' records differ in arithmetic (one thread
against all of them); `tests/test_ray.py` checks equality at equal threads.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ray_two_nodes import SWEEP  # the same 6 demo runs (this folder is on sys.path when run as a script)


def timed(args, env) -> float:
    t0 = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "harness.cli", *args], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if result.returncode:
        raise SystemExit(result.stderr[-2000:])
    return seconds


def main():
    work = Path(tempfile.mkdtemp(prefix="ray-sweep-time-"))
    times = {}
    for how in ("sequential", "ray"):
        (work / f"{how}.toml").write_text(SWEEP.format(runs=work / how))
        env = dict(os.environ, HARNESS_CACHE=str(work / f"cache-{how}"), RAY_AUTH_MODE="disabled")
        env.pop("RAY_ADDRESS", None)
        times[how] = timed(["sweep", str(work / f"{how}.toml"), *(["--ray"] if how == "ray" else [])], env)
    print(f"6-run sweep on {os.cpu_count()} CPUs: sequential {times['sequential']:.1f} s, "
          f"--ray (local instance, num_cpus = 1 per run) {times['ray']:.1f} s; "
          f"ratio sequential/ray = {times['sequential'] / times['ray']:.2f}")


if __name__ == "__main__":
    main()

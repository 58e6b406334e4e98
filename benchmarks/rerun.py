"""Runs a committed run again from its own config.json, in a fresh runs folder and cache,
with the threads it recorded, and compares what it writes with the committed records:
every iteration record (decisions, units removed, FLOPs, parameters, accuracies, every
candidate's numbers) and result.json, wall times aside. Both sides are read through the
record schema's reader, so a key renamed since the committed run (a candidate's ``structure``,
now ``type``) compares as the same. Exit status 1 when they differ.

    python benchmarks/rerun.py benchmarks/results/rerun-cpu/rerun-resnet20-cifar10-cka-kl-cka-s0
    python benchmarks/rerun.py leaderboards/records/table3-resnet32/table3-resnet32-cifar10-layer-only-kl-cka-s2

`.ci/run` does this for the first: a run of the whole loop (baseline, criterion, both
candidates, fine-tunes, similarities, the oracle) sized to take about a minute, made by
`harness sweep benchmarks/rerun-cpu.toml` in fp32 with one thread, so every commit proves that
the code still computes what it recorded. A leaderboard row takes tens of minutes, more than
CI's 20 allow. Only the same arithmetic gives the same bits: a run trained in bf16 on a CPU
with native bf16 (AVX512-BF16 or AMX), like the Table III rows, is refused on a CPU that
emulates it (different rounding, and about 6x slower), and CUDA runs are refused here.
Other instruction sets give other fp32 bits too (oneDNN picks other kernels on an AVX-512 CPU
than on an AVX2 one): a record that says which it computed with (``hardware.isa``) is run again
capped at it (harness.training.isa_caps, so an AVX-512 CPU reproduces an AVX2 record), and
refused on a CPU without it. Paths in the config, such as ../shared, are read from the
project's root.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def strip(rows: list[dict]) -> list[dict]:
    from harness.schema import reproducible

    return [reproducible(r) for r in rows]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a committed run directory")
    args = parser.parse_args()
    import torch

    from harness import records
    from harness.run import run_bench
    from harness.config import BenchConfig
    from harness.training import CPU_ISAS, cpu_has_fast_bf16, cpu_isa, isa_caps

    committed = Path(args.run)
    record = records.read_config(committed)
    if record["hardware"].get("device") != "cpu":
        print(f"{committed} was measured on {record['hardware'].get('name')}: only CPU runs reproduce here", file=sys.stderr)
        sys.exit(2)
    precision = record["config"].get("precision") or "fp32"  # records before --precision trained in fp32
    if precision == "bf16" and not cpu_has_fast_bf16():
        print(f"{committed} trained in bf16 on a CPU with native bf16; this CPU emulates bf16 (other rounding, "
              "about 6x slower), so it cannot give the same numbers: rerun it on a CPU with AVX512-BF16 or AMX, "
              "or rerun an fp32 run such as benchmarks/results/rerun-cpu/*", file=sys.stderr)
        sys.exit(2)
    isa = record["hardware"].get("isa")
    if isa and CPU_ISAS.index(cpu_isa(capped=False)) < CPU_ISAS.index(isa):
        print(f"{committed} computed with {isa}, which this CPU lacks (its widest is {cpu_isa(capped=False)}), so it "
              f"cannot give the same numbers: rerun it on a CPU with {isa} or wider", file=sys.stderr)
        sys.exit(2)
    caps = isa_caps(isa) if isa else {}
    if any(os.environ.get(k) != v for k, v in caps.items()):
        # torch picks its kernels when it loads: start again with the caps set
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **caps})
    torch.set_num_threads(record["hardware"]["threads"])  # the arithmetic depends on it
    work = Path(tempfile.mkdtemp(prefix="rerun-"))
    cfg = BenchConfig.from_dict(record["config"])
    cfg = dataclasses.replace(cfg, runs_dir=str(work / "runs"), cache_dir=str(work / "cache"))
    t0 = time.perf_counter()
    run_dir, _ = run_bench(cfg)
    seconds = time.perf_counter() - t0
    ok = True
    for what, mine, theirs in (
            ("iterations.jsonl", strip(records.read_iterations(run_dir)), strip(records.read_iterations(committed))),
            ("result.json", records.read_result(run_dir), records.read_result(committed))):
        if mine != theirs:
            ok = False
            a = json.dumps(theirs, indent=1, sort_keys=True).splitlines()
            b = json.dumps(mine, indent=1, sort_keys=True).splitlines()
            print(f"{what} differs from the committed record:", file=sys.stderr)
            print("\n".join(list(difflib.unified_diff(a, b, "committed", "rerun", lineterm=""))[:80]), file=sys.stderr)
    rows = records.read_iterations(run_dir)
    print(f"rerun of {committed.name} in {seconds:.0f} s ({record['hardware']['threads']} thread(s), "
          f"{isa or 'instruction set unrecorded, ' + cpu_isa()}): "
          f"{len(rows) - 1} iterations, decision path {records.read_result(run_dir)['decision_path_all']}, "
          f"{'identical to' if ok else 'DIFFERENT from'} the committed records (wall times aside)")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

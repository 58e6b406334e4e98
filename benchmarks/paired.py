"""Table III with seeds: each method's FLOPs reduction at the tolerance (mean and standard
deviation over seeds) and the paired difference, seed by seed, of one method (default: the
CKA-guided one) against every other, with how many seeds a paired t-test would need to detect
a 5-point FLOPs difference at 80% power given the spread of those differences. Reads complete
run records only.

    python benchmarks/paired.py leaderboards/records/table3-resnet32 [--reference cka] [--out FILE]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.decision_stats import paired_t_needed  # noqa: E402
from harness.leaderboard import read_runs  # noqa: E402

#: the FLOPs-reduction difference (points) the seed count is sized for
DETECT = 5.0
COLUMNS = (("flops_reduction_pct", "FLOPs reduction %"), ("params_reduction_pct", "params reduction %"),
           ("accuracy_delta", "test accuracy Δ"), ("iterations", "iterations kept"))


def fmt(values: list[float]) -> str:
    if not values:
        return "—"
    mean = statistics.fmean(values)
    return f"{mean:.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{mean:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--reference", default="cka", help="the method the others are compared with")
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown here")
    args = parser.parse_args()

    runs = [r.row for r in read_runs(args.runs) if r.complete]
    if not runs:
        sys.exit(f"no complete run under {', '.join(map(str, args.runs))}")
    by_method: dict[str, dict[int, dict]] = {}
    for row in runs:
        by_method.setdefault(row["method"], {})[row["seed"]] = row
    methods = sorted(by_method, key=lambda m: (m != args.reference, m))
    first = runs[0]
    lines = [f"# Table III: {first['model']} on {first['data']}", "",
             f"Stopping rule: {first['stop']}; the kept model is the last within the tolerance. "
             "Mean ± sample standard deviation over seeds; decision paths per seed (L = blocks removed, "
             "F = filters removed).", "",
             "| method | seeds | " + " | ".join(h for _, h in COLUMNS) + " | decision paths |",
             "|---|---:|" + "---:|" * len(COLUMNS) + "---|"]
    for m in methods:
        rows = [by_method[m][s] for s in sorted(by_method[m])]
        paths = ", ".join(r["decision_path"] or "(none)" for r in rows)
        lines.append(f"| {m} | {len(rows)} | " + " | ".join(fmt([float(r[k]) for r in rows]) for k, _ in COLUMNS)
                     + f" | {paths} |")
    ref = by_method.get(args.reference, {})
    lines += ["", f"## Paired by seed: {args.reference} minus each method", "",
              "| method | seeds paired | FLOPs reduction Δ (points) | per seed | test accuracy Δ (points) | "
              f"per seed | seeds to detect {DETECT:g} FLOPs points (paired t, 80% power) |",
              "|---|---:|---:|---|---:|---|---:|"]
    for m in methods:
        if m == args.reference:
            continue
        seeds = sorted(set(ref) & set(by_method[m]))
        dflops = [ref[s]["flops_reduction_pct"] - by_method[m][s]["flops_reduction_pct"] for s in seeds]
        dacc = [ref[s]["accuracy_delta"] - by_method[m][s]["accuracy_delta"] for s in seeds]
        needed = paired_t_needed(DETECT, statistics.stdev(dflops)) if len(dflops) > 1 else None
        lines.append(f"| {m} | {len(seeds)} | {fmt(dflops)} | {', '.join(f'{d:+.2f}' for d in dflops)} | "
                     f"{fmt(dacc)} | {', '.join(f'{d:+.2f}' for d in dacc)} | {needed or '—'} |")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()

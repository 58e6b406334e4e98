"""Every iteration's candidates of each run, as a Markdown table: the kept decision, and for
each candidate the units it removes, its similarity to the parent after the brief fine-tune,
its FLOPs reduction from the parent and its validation accuracy; then the run's totals and
test accuracy. What benchmarks/results/traced-cpu.md shows.

    python benchmarks/candidates_table.py runs/traced/*
"""

from __future__ import annotations

import sys
from pathlib import Path

from harness import records


def cell(candidate: dict | None, parent_flops: int) -> str:
    if candidate is None:
        return ""
    similarity = "" if candidate.get("similarity") is None else f"{candidate['similarity']:.4f}"
    val = "" if candidate.get("val_accuracy") is None else f"{candidate['val_accuracy']:.2f}"
    units = f"{candidate['units']:,} unit" + ("" if candidate["units"] == 1 else "s")
    return (f"{units}, {similarity}, {100 * (1 - candidate['flops'] / parent_flops):.2f}, {val}")


def main(runs: list[Path]) -> None:
    types = ("layer", "filter")
    print("| run | iteration | kept | " + " | ".join(f"{t} candidate: units, similarity, FLOPs -%, val acc" for t in types)
          + " | FLOPs -% | params -% | test acc |")
    print("|---|---:|---|" + "---|" * len(types) + "---:|---:|---:|")
    for run in runs:
        rows = records.read_iterations(run)
        for row in rows:
            by_type = {c["type"]: c for c in row.get("candidates", [])}
            parent = rows[row["iteration"] - 1]["flops"] if row["iteration"] else row["flops"]
            print(f"| {run.name} | {row['iteration']} | {row.get('decision') or ''} | "
                  + " | ".join(cell(by_type.get(t), parent) for t in types)
                  + f" | {row.get('flops_reduction_pct', 0.0):.2f} | {row.get('params_reduction_pct', 0.0):.2f} | "
                    f"{row['accuracy']:.2f} |")


if __name__ == "__main__":
    main([Path(p) for p in sys.argv[1:]])

"""Decision quality: every recorded decision checked against its oracle.

A run started with ``--oracle-epochs E`` records, at each iteration, every candidate as the
method saw it (every similarity metric, validation accuracy and loss after the brief
fine-tune, FLOPs, parameters) and the oracle's verdict: each candidate fine-tuned E epochs
more with two seeds, then measured on the validation split. ``harness decisions`` replays
every selector on those records, so one set of runs scores them all on the same decisions:

- the oracle's answer is the candidate with the higher mean over its two seeds; a gap
  smaller than the disagreement between the oracle's own seeds (the largest difference
  between the two seeds of one candidate) is a **tie**, where either answer is right;
- **agreement**: the share of decisions that are not ties where a selector picks the
  oracle's answer, with a 95% Wilson interval;
- **regret**: the oracle accuracy of the best candidate minus that of the chosen one (mean
  over every decision, points, with a 95% normal interval);
- **paired difference to linear CKA**: on the same decisions, linear CKA's agreement and
  regret minus the other selector's, with a 95% bootstrap interval over decisions.

``random`` is the expectation of a uniform choice (so it has no interval of its own), and
``always <type>`` keeps that type's candidate. Everything written is a function of the
records alone, so CI can rebuild the pages and compare them byte for byte.
"""

from __future__ import annotations

import csv
import html
import io
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from harness import records
from harness.errors import HarnessError, warn
from harness.leaderboard import find_runs, html_page
from harness.oracle import oracle_verdict

#: the run's own similarity metric of the paper, against which the others are compared
REFERENCE = "most similar: cka"
ORACLE_SPLITS = ("val", "test")
BOOTSTRAP_SAMPLES = 4000


@dataclass
class Decision:
    group: str  # "<model> on <data>"
    run: str
    iteration: int
    candidates: list[dict]  # the iteration record's candidates, in tie-break order (layer first)
    oracle: dict[str, list[float]]  # split -> mean oracle accuracy of each candidate
    best: dict[str, int | None]  # split -> the oracle's answer (None: a tie)


def read_decisions(roots: list[Path]) -> list[Decision]:
    """Every iteration with an oracle verdict under ``roots`` (runs found as the leaderboard
    finds them), in a stable order."""
    found = []
    for run_dir in sorted(find_runs(roots), key=lambda p: str(p)):
        try:
            run = records.RunRecord.read(run_dir)
            if run is None:
                continue
            group = f"{run.config['config']['model']} on {run.data_label}"
        except (HarnessError, ValueError, KeyError, TypeError, OSError) as exc:
            warn(f"skipping the corrupt run record {run_dir} ({type(exc).__name__})")
            continue
        for row in run.iterations:
            cands = row.get("candidates") or []
            if not row.get("oracle") or len(cands) < 2 or not all("oracle" in c for c in cands):
                continue
            oracle, best = {}, {}
            for split in ORACLE_SPLITS:
                verdict = oracle_verdict([c["oracle"][f"{split}_accuracy"] for c in cands])
                oracle[split], best[split] = verdict["means"], verdict["best"]
            found.append(Decision(group, run_dir.name, row["iteration"], cands, oracle, best))
    return found


# ---------------------------------------------------------------- selectors
Selector = Callable[[list[dict]], "int | None"]


def _argbest(values: list, sign: float) -> int | None:
    """The first index of the best value (the tie-break order); None when any is missing."""
    if any(v is None for v in values):
        return None
    return max(range(len(values)), key=lambda i: (sign * values[i], -i))


def selectors(decisions: list[Decision]) -> dict[str, Selector | None]:
    """Every selector the records allow: the most similar candidate under each recorded
    similarity metric (the CKA-guided method with that metric), the validation-greedy ones,
    random (None: scored by its expectation) and always-<type>."""
    metrics = sorted({m for d in decisions for c in d.candidates for m in (c.get("similarities") or {})})
    types = sorted({c["type"] for d in decisions for c in d.candidates},
                   key=lambda t: (t != "layer", t != "filter", t))
    out: dict[str, Selector | None] = {}
    for metric in sorted(metrics, key=lambda m: m != "cka"):
        out[f"most similar: {metric}"] = (
            lambda cs, m=metric: _argbest([(c.get("similarities") or {}).get(m) for c in cs], 1.0))
    out["accuracy-greedy"] = lambda cs: _argbest([c.get("val_accuracy") for c in cs], 1.0)
    out["loss-greedy"] = lambda cs: _argbest([c.get("val_loss") for c in cs], -1.0)
    out["random"] = None
    for t in types:
        out[f"always {t}"] = lambda cs, t=t: next((i for i, c in enumerate(cs) if c["type"] == t), None)
    return out


# ---------------------------------------------------------------- statistics
def wilson(k: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion k/n."""
    if n == 0:
        return math.nan, math.nan
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def mean_interval(values: list[float], z: float = 1.96) -> tuple[float, float, float]:
    if not values:
        return math.nan, math.nan, math.nan
    m = statistics.fmean(values)
    half = z * statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return m, m - half, m + half


def bootstrap_mean(values: list[float], samples: int = BOOTSTRAP_SAMPLES) -> tuple[float, float, float]:
    """Mean and 95% percentile-bootstrap interval, from a fixed seed (the pages are rebuilt byte for byte)."""
    import numpy as np

    if not values:
        return math.nan, math.nan, math.nan
    v = np.asarray(values, dtype=float)
    rng = np.random.default_rng(0)
    means = v[rng.integers(0, len(v), size=(samples, len(v)))].mean(axis=1)
    return float(v.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def outcomes(decisions: list[Decision], select: Selector | None, split: str) -> tuple[list, list]:
    """Per decision: whether the selector agreed with the oracle (None on a tie or when it
    cannot choose) and its regret in points (None when it cannot choose). For ``random``
    (``select`` None) both are expectations."""
    agree, regret = [], []
    for d in decisions:
        means, best = d.oracle[split], d.best[split]
        top = max(means)
        if select is None:
            agree.append(None if best is None else 1 / len(means))
            regret.append(top - statistics.fmean(means))
            continue
        i = select(d.candidates)
        agree.append(None if best is None or i is None else float(i == best))
        regret.append(None if i is None else top - means[i])
    return agree, regret


def score(decisions: list[Decision], split: str) -> list[dict]:
    """One row per selector: agreement, regret and the paired differences to linear CKA."""
    sel = selectors(decisions)
    per = {name: outcomes(decisions, fn, split) for name, fn in sel.items()}
    rows = []
    for name, (agree, regret) in per.items():
        a = [x for x in agree if x is not None]
        r = [x for x in regret if x is not None]
        low, high = (math.nan, math.nan) if sel[name] is None else wilson(sum(a), len(a))
        rm, rlow, rhigh = mean_interval(r)
        if sel[name] is None:
            rlow = rhigh = math.nan
        row = {"selector": name, "decisions": len(r), "ties": sum(1 for d in decisions if d.best[split] is None),
               "agreement_pct": 100 * statistics.fmean(a) if a else math.nan,
               "agreement_low": 100 * low, "agreement_high": 100 * high,
               "regret": rm, "regret_low": rlow, "regret_high": rhigh}
        if REFERENCE in per and name != REFERENCE:
            ref_agree, ref_regret = per[REFERENCE]
            da = [100 * (x - y) for x, y in zip(ref_agree, agree) if x is not None and y is not None]
            dr = [x - y for x, y in zip(ref_regret, regret) if x is not None and y is not None]
            row |= dict(zip(("cka_minus_agreement", "cka_minus_agreement_low", "cka_minus_agreement_high"),
                            bootstrap_mean(da)))
            row |= dict(zip(("cka_minus_regret", "cka_minus_regret_low", "cka_minus_regret_high"),
                            bootstrap_mean(dr)))
        rows.append(row)
    return rows


def tables(decisions: list[Decision]) -> dict[tuple[str, str], list[dict]]:
    """(group, oracle split) -> scores; the group "all" pools every model."""
    groups = sorted({d.group for d in decisions})
    out = {}
    for split in ORACLE_SPLITS:
        for group in (["all"] if len(groups) > 1 else []) + groups:
            members = [d for d in decisions if group == "all" or d.group == group]
            out[(group, split)] = score(members, split)
    return out


# ---------------------------------------------------------------- rendering
COLUMNS = ["selector", "decisions", "ties", "agreement_pct", "agreement_low", "agreement_high", "regret",
           "regret_low", "regret_high", "cka_minus_agreement", "cka_minus_agreement_low", "cka_minus_agreement_high",
           "cka_minus_regret", "cka_minus_regret_low", "cka_minus_regret_high"]


def _num(v, digits: int = 2) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _interval(m, lo, hi, unit: str = "") -> str:
    if m is None or (isinstance(m, float) and math.isnan(m)):
        return "—"
    if isinstance(lo, float) and math.isnan(lo):
        return f"{m:.1f}{unit} (expected)" if unit else f"{m:.2f} (expected)"
    return f"{m:.1f}{unit} [{lo:.1f}, {hi:.1f}]" if unit else f"{m:.2f} [{lo:.2f}, {hi:.2f}]"


def verdict_lines(rows: list[dict]) -> list[str]:
    """The answer in words, read off the intervals: beyond them or not."""
    by = {r["selector"]: r for r in rows}
    ref = by.get(REFERENCE)
    if not ref or math.isnan(ref["agreement_pct"]):
        return []
    lines = []
    lo, hi = ref["agreement_low"], ref["agreement_high"]
    where = "above" if lo > 50 else "below" if hi < 50 else "not distinguishable from"
    lines.append(f"Linear CKA agrees with the oracle on {ref['agreement_pct']:.1f}% of the decisions that are not "
                 f"ties (95% interval {lo:.1f}-{hi:.1f}%): {where} a coin flip (50%).")
    for other in ("accuracy-greedy", "loss-greedy", "random"):
        o = by.get(other)
        if not o or "cka_minus_agreement" not in o or math.isnan(o["cka_minus_agreement"]):
            continue
        d, dlo, dhi = o["cka_minus_agreement"], o["cka_minus_agreement_low"], o["cka_minus_agreement_high"]
        word = "better than" if dlo > 0 else "worse than" if dhi < 0 else "not distinguishable from"
        r, rlo, rhi = o["cka_minus_regret"], o["cka_minus_regret_low"], o["cka_minus_regret_high"]
        lines.append(f"Against {other}: agreement {d:+.1f} points [{dlo:+.1f}, {dhi:+.1f}], regret {r:+.2f} points "
                     f"[{rlo:+.2f}, {rhi:+.2f}] (CKA minus {other}, paired): {word} {other}.")
    return lines


EXPLANATION = """\
Each run made with `--oracle-epochs E` records every candidate of every iteration as its method saw it
(every similarity metric, validation accuracy and loss after the brief fine-tune) and the oracle: each
candidate fine-tuned E epochs more with two seeds, then measured on the validation split (held out of
training) and, for reporting, on the test split. Every selector is replayed on the same decisions.

- **oracle's answer**: the candidate with the higher mean over its two seeds; a gap smaller than the
  disagreement between the oracle's own seeds is a **tie** (either answer is right).
- **agreement**: the share of the decisions that are not ties where the selector picks the oracle's
  answer, with a 95% Wilson interval. A coin flip scores 50%.
- **regret**: oracle accuracy of the best candidate minus that of the chosen one, in points, mean over
  all decisions with a 95% normal interval.
- **CKA − selector**: linear CKA's agreement (regret) minus the selector's on the same decisions, with a
  95% bootstrap interval over decisions: above 0 in agreement (below 0 in regret) favours CKA.
- **most similar: M** is the paper's method with similarity metric M; **random** is the expectation of a
  uniform choice; **always T** keeps the T candidate."""


def to_markdown(decisions: list[Decision], scored: dict) -> str:
    runs = sorted({d.run for d in decisions})
    lines = ["# Decision quality", "", "Generated by `harness decisions` from the run records; also as "
             "[HTML](decisions.html) and [CSV](decisions.csv).", "", EXPLANATION,
             "", f"{len(decisions)} decisions with an oracle from {len(runs)} runs.", "",
             "![agreement and regret of each selector](decisions.png)", ""]
    for (group, split), rows in scored.items():
        lines += [f"## {group}: oracle on the {'validation' if split == 'val' else 'test'} split", ""]
        lines += [f"- {line}" for line in verdict_lines(rows)] + [""]
        lines += ["| selector | decisions | ties | agreement % [95%] | regret, points [95%] | "
                  "CKA − selector: agreement [95%] | CKA − selector: regret [95%] |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            lines.append(
                f"| {r['selector']} | {r['decisions']} | {r['ties']} | "
                f"{_interval(r['agreement_pct'], r['agreement_low'], r['agreement_high'], '%')} | "
                f"{_interval(r['regret'], r['regret_low'], r['regret_high'])} | "
                f"{_interval(r.get('cka_minus_agreement'), r.get('cka_minus_agreement_low'), r.get('cka_minus_agreement_high'), ' pts') if 'cka_minus_agreement' in r else ''} | "
                f"{_interval(r.get('cka_minus_regret'), r.get('cka_minus_regret_low'), r.get('cka_minus_regret_high')) if 'cka_minus_regret' in r else ''} |")
        lines.append("")
    return "\n".join(lines)


def to_csv(scored: dict) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["group", "oracle_split"] + COLUMNS)
    for (group, split), rows in scored.items():
        for r in rows:
            writer.writerow([group, split] + [r.get(c) if c in ("selector", "decisions", "ties") else _num(r.get(c), 4)
                                              for c in COLUMNS])
    return buffer.getvalue()


def to_html(markdown_text: str) -> str:
    """The Markdown page as simple HTML (headings, lists, tables, paragraphs)."""
    out, table = [], []

    def flush():
        if table:
            head, body = table[0], table[2:]
            cells = lambda row, tag: "".join(f"<{tag}>{html.escape(c.strip())}</{tag}>"  # noqa: E731
                                             for c in row.strip().strip("|").split(" | "))
            out.append('<div class="scroll"><table>\n<thead><tr>' + cells(head, "th") + "</tr></thead>\n<tbody>\n"
                       + "\n".join("<tr>" + cells(r, "td") + "</tr>" for r in body) + "\n</tbody></table></div>")
            table.clear()

    for line in markdown_text.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("## "):
            out.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("# "):
            out.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("- "):
            out.append(f"<p>{html.escape(line[2:])}</p>")
        elif line.startswith("!["):
            out.append('<p><img src="decisions.png" alt="agreement and regret of each selector"></p>')
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    flush()
    return html_page("Decision quality", "\n".join(out) + "\n")


def plot_png(scored: dict) -> bytes:
    """Agreement and regret of each selector with their intervals, one colour per model."""
    import matplotlib
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = [g for (g, split) in scored if split == "val"]
    names = [r["selector"] for r in scored[(groups[0], "val")]]
    with matplotlib.style.context("default"), matplotlib.rc_context({"font.family": "DejaVu Sans", "font.size": 9}):
        fig = Figure(figsize=(10, 0.38 * len(names) + 1.6), dpi=110)
        FigureCanvasAgg(fig)
        ax_a, ax_r = fig.subplots(1, 2, sharey=True)
        colours = matplotlib.colormaps["tab10"]
        for k, group in enumerate(groups):
            rows = {r["selector"]: r for r in scored[(group, "val")]}
            offset = (k - (len(groups) - 1) / 2) * 0.22
            for y, name in enumerate(names):
                r = rows.get(name)
                if r is None:
                    continue
                for ax, m, lo, hi in ((ax_a, r["agreement_pct"], r["agreement_low"], r["agreement_high"]),
                                      (ax_r, r["regret"], r["regret_low"], r["regret_high"])):
                    if math.isnan(m):
                        continue
                    err = None if math.isnan(lo) else [[m - lo], [hi - m]]
                    ax.errorbar([m], [y + offset], xerr=err, fmt="o", color=colours(k % 10), capsize=3,
                                markersize=5, label=group if y == 0 and ax is ax_a else None)
        ax_a.axvline(50, color="0.5", linestyle="--", linewidth=0.8)
        ax_r.axvline(0, color="0.5", linestyle="--", linewidth=0.8)
        ax_a.set_yticks(range(len(names)), names)
        ax_a.invert_yaxis()
        ax_a.set_xlabel("agreement with the oracle (%, ties left out; 95% interval)")
        ax_r.set_xlabel("regret (oracle validation accuracy points; 95% interval)")
        for ax in (ax_a, ax_r):
            ax.grid(True, axis="x", color="0.92")
        fig.suptitle("Each decision checked against the oracle (validation split)")
        ax_a.legend(loc="upper center", bbox_to_anchor=(1.0, -0.14 - 0.3 / max(1, len(names))), ncols=len(groups),
                    frameon=False, fontsize=8)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def write_decisions(roots: list[Path], out: Path) -> list[Path]:
    """Writes ``out/decisions.{md,csv,html,png}``; returns them (none without decisions)."""
    decisions = read_decisions(roots)
    if not decisions:
        return []
    scored = tables(decisions)
    md = to_markdown(decisions, scored)
    files = {out / "decisions.md": md.encode(), out / "decisions.csv": to_csv(scored).encode(),
             out / "decisions.html": to_html(md).encode(), out / "decisions.png": plot_png(scored)}
    for path, data in files.items():
        records.atomic_write_bytes(path, data)
    return list(files)

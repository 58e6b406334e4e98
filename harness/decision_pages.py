"""The decision page: what :mod:`harness.decisions` scored, written as Markdown, CSV, HTML and
a PNG plot (``harness decisions --out``), and the lines the command prints. A function of the
records alone, so CI rebuilds the pages byte for byte."""

from __future__ import annotations

import csv
import html
import io
import math
from pathlib import Path

from harness import records
from harness.decisions import CONTESTED_BELOW, ORACLE_SPLITS, REFERENCE, SIZED_FOR, Decision, read_decisions, tables
from harness.leaderboard import html_page

COLUMNS = ["selector", "runs", "decisions", "ties", "resolved", "agreement_pct", "agreement_low", "agreement_high",
           "regret", "regret_low", "regret_high", "pairs", "cka_only", "other_only", "test_p",
           "cka_minus_agreement", "cka_minus_agreement_low", "cka_minus_agreement_high",
           "cka_minus_regret", "cka_minus_regret_low", "cka_minus_regret_high",
           "detectable_agreement", "detectable_regret", "needed_decisions", "needed_with_oracle"]
COUNTS = {"selector", "runs", "decisions", "ties", "resolved", "pairs", "cka_only", "other_only", "needed_decisions",
          "needed_with_oracle"}
#: the comparisons spelled out in words: the question the page answers
HEADLINE = ("accuracy-greedy", "loss-greedy", "always filter", "random")
SPLIT_NAMES = {"val": "validation", "test": "test"}


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _num(v, digits: int = 2) -> str:
    return "" if _missing(v) else f"{v:.{digits}f}"


def _interval(m, lo, hi, unit: str = "", signed: bool = False) -> str:
    if _missing(m):
        return "—"
    f = "+.1f" if signed and unit else ".1f" if unit else "+.2f" if signed else ".2f"
    if _missing(lo):
        return f"{m:{f}}{unit} (expected)"
    return f"{m:{f}}{unit} [{lo:{f}}, {hi:{f}}]"


def _p(p) -> str:
    return "—" if _missing(p) else "< 0.0001" if p < 1e-4 else f"{p:.4f}" if p < 0.01 else f"{p:.2f}"


def _points(v, digits: int = 1) -> str:
    return "none" if _missing(v) else f"{v:.{digits}f}"


def verdict_lines(rows: list[dict]) -> list[str]:
    """The answer in words: an exact test and intervals that respect the runs, or "the data
    cannot tell"."""
    by = {r["selector"]: r for r in rows}
    ref = by.get(REFERENCE)
    if not ref:
        return []
    if ref["resolved"]:
        k = round(ref["agreement_pct"] * ref["resolved"] / 100)
        lines = [f"Linear CKA picks the oracle's answer on {k} of the {ref['resolved']} decisions it resolves "
                 f"({ref['agreement_pct']:.1f}%, 95% interval {ref['agreement_low']:.1f}-"
                 f"{ref['agreement_high']:.1f}%, {ref['runs']} runs)."]
    else:
        lines = [f"The oracle resolves none of these {ref['decisions']} decisions (each gap is within its own "
                 "error): agreement cannot be scored; regret still compares the selectors."]
    for name in HEADLINE:
        o = by.get(name)
        if not o or "cka_minus_regret" not in o:
            continue
        d, lo, hi, p = (o["cka_minus_agreement"], o["cka_minus_agreement_low"], o["cka_minus_agreement_high"],
                        o["test_p"])
        if not o["pairs"]:
            agreement, word = "no resolved decision to test", "the data cannot tell them apart"
        else:
            test = (f"exact binomial test of CKA against the expected {ref['agreement_pct'] - d:.0f}%:"
                    if name == "random" else
                    f"only CKA right on {o['cka_only']}, only {name} right on {o['other_only']}: exact McNemar")
            agreement = f"{test} p = {_p(p)}; agreement {d:+.1f} points [{lo:+.1f}, {hi:+.1f}]"
            word = ("CKA is better" if p < 0.05 and lo > 0 else "CKA is worse" if p < 0.05 and hi < 0
                    else "the data cannot tell them apart")
        r, rlo, rhi = o["cka_minus_regret"], o["cka_minus_regret_low"], o["cka_minus_regret_high"]
        if not _missing(rlo) and (rlo > 0 or rhi < 0) and word.startswith("the data"):
            word += f" by agreement; CKA's regret is {'higher' if rlo > 0 else 'lower'} beyond its interval"
        lines.append(f"Against {name}: {agreement}; regret {_interval(r, rlo, rhi, signed=True)} points "
                     f"(CKA minus {name}): {word}.")
    return lines


def detectable_lines(rows: list[dict]) -> list[str]:
    """One line per comparison with linear CKA: the smallest differences these decisions can
    detect at 80% power, and about how many decisions a 3-point agreement difference needs."""
    lines = []
    for o in rows:
        if o["selector"] == REFERENCE or "pairs" not in o:
            continue
        name, n = o["selector"], o["pairs"]
        if name == "random":
            head = f"CKA vs random: {n} resolved decisions"
            test = "above the expected agreement (exact binomial test, two-sided 5%)"
        else:
            head = (f"CKA vs {name}: {n} paired resolved decisions, "
                    f"{(o['cka_only'] or 0) + (o['other_only'] or 0)} discordant")
            test = "(exact McNemar, two-sided 5%)"
        if not n:
            agreement = "no agreement difference (no resolved decision)"
        elif o["detectable_agreement"] is None:
            agreement = f"no agreement difference however large {test}"
        else:
            agreement = f"agreement differences of {o['detectable_agreement']:.1f} points or more {test}"
        regret = ("" if _missing(o["detectable_regret"])
                  else f", regret differences of {o['detectable_regret']:.2f} points or more")
        sized = ""
        if o["needed_decisions"]:
            with_oracle = (f" (about {o['needed_with_oracle']:,} decisions with an oracle at this tie rate)"
                           if o["needed_with_oracle"] else "")
            sized = (f"; {100 * SIZED_FOR:.0f} points would need about {o['needed_decisions']:,} resolved "
                     f"decisions{with_oracle}")
        lines.append(f"{head}: detectable at 80% power: {agreement}{regret}{sized}.")
    return lines


def printed_lines(scored: dict) -> list[str]:
    """What ``harness decisions`` prints: for the pooled models, each oracle split and each
    subset, the answer in words and the detectable differences of the headline comparisons."""
    pooled = next(iter(scored))[0]
    lines = []
    for (group, split, subset), rows in scored.items():
        if group != pooled:
            continue
        ref = rows[0]
        what = "every decision" if subset == "all" else f"contested decisions (oracle gap < {CONTESTED_BELOW:g} points)"
        lines.append(f"{group}, oracle on the {SPLIT_NAMES[split]} split, {what}: {ref['decisions']} decisions "
                     f"from {ref['runs']} runs, {ref['decisions'] - ref['ties']} resolved")
        headline = [r for r in rows if r["selector"] in HEADLINE]
        lines += [f"  {line}" for line in verdict_lines(rows) + detectable_lines(headline)]
    return lines


def _listed(values, fmt: str = "{}") -> str:
    values = sorted(v for v in set(values) if v is not None)
    return " and ".join(fmt.format(v) for v in values) if values else "an unknown number of"


def split_text(decisions: list[Decision], split: str) -> str:
    """The split the oracle measured and on how many images: "test split (a fixed subset of
    2,000 images)"."""
    images = _listed((d.images[split] for d in decisions), "{:,}")
    subset = "a fixed subset of " if split == "test" and any(d.test_subset for d in decisions) else ""
    return f"{SPLIT_NAMES[split]} split ({subset}{images} images)"


def _facts(decisions: list[Decision]) -> str:
    """What the records' oracle was: horizon, seeds and evaluation images of each split."""
    epochs = _listed((d.epochs for d in decisions), "{:g}")
    seeds = _listed(len(a) for d in decisions for a in d.accuracies["val"])
    return (f"The oracle in these records: each candidate, as briefly fine-tuned, trained {epochs} epoch(s) more "
            f"with {seeds} seeds, then measured on the {split_text(decisions, 'val')}, the very images every "
            f"selector reads, and on the {split_text(decisions, 'test')}.")


EXPLANATION = f"""\
Each run made with `--oracle-epochs E` records every candidate of every iteration as its method saw it
(every similarity metric, validation accuracy and loss after the brief fine-tune) and the oracle's
accuracies per seed. Every selector is replayed on the same decisions.

- **oracle's answer**: the candidate with the higher mean over its seeds. The gap is a **tie** (either
  answer is right) when it is below 1.96 standard errors, the standard error combining the seed spread
  (each candidate's variance over its seeds over their number: the two candidates' spreads pooled, not
  the larger one taken) and the binomial error p(1-p)/n of each accuracy on its n evaluation images
  (an upper bound: both candidates are scored on the same images, and the records hold no per-image
  outcomes). A decision is resolved when it is not a tie.
- **contested**: a decision whose oracle gap is below {CONTESTED_BELOW:g} points; above it one candidate
  collapsed and every sensible selector is right. Scored apart.
- **agreement**: the share of the resolved decisions where the selector picks the oracle's answer (a
  coin flip: 50%); **regret**: oracle accuracy of the best candidate minus that of the chosen one, in
  points, mean over all decisions.
- **intervals** (95%) respect clustering by run: each is computed on the effective number of decisions,
  their count divided by the design effect (at least 1) that a run-clustered bootstrap (whole runs
  resampled, 4,000 times, seed 0) measures: Wilson for agreement, Newcombe's paired score interval for
  CKA − selector agreement, normal for regret. With few runs the design effect is itself uncertain.
- **only CKA right : only selector right**: the discordant resolved decisions; **exact p**: the exact
  McNemar test on them (for random: an exact binomial test of CKA's agreement against the expectation).
  It treats decisions as independent; the intervals do not.
- **detectable**: the smallest CKA − selector difference these decisions detect at 80% power (two-sided
  5%): agreement by the exact McNemar test, with the discordance observed (or the difference, if larger);
  regret by a normal test with the clustered standard error.
- The validation oracle continues training the same weights and scores them on the same validation
  images that accuracy-greedy and loss-greedy read: read its verdict on those two as favourable to them.
  The test oracle shares no image with any selector.
- **most similar: M** is the paper's method with similarity metric M; **random** is the expectation of a
  uniform choice; **always T** keeps the T candidate."""


def _summary(subset: str, rows: list[dict]) -> str:
    ref = rows[0]
    what = ("All {n} decisions" if subset == "all"
            else f"Contested decisions (oracle gap below {CONTESTED_BELOW:g} points): {{n}}").format(n=ref["decisions"])
    return (f"### {what}, {ref['runs']} runs: the oracle resolves {ref['decisions'] - ref['ties']}, "
            f"{ref['ties']} are ties")


def to_markdown(decisions: list[Decision], scored: dict) -> str:
    runs = sorted({d.run for d in decisions})
    groups = sorted({d.group for d in decisions})
    per_group = "; ".join(f"{g}: {sum(d.group == g for d in decisions)} decisions from "
                          f"{len({d.run for d in decisions if d.group == g})} runs" for g in groups)
    lines = ["# Decision quality", "", "Generated by `harness decisions` from the run records; also as "
             "[HTML](decisions.html) and [CSV](decisions.csv).", "", EXPLANATION, "", _facts(decisions), "",
             f"{len(decisions)} decisions with an oracle from {len(runs)} runs ({per_group}).", "",
             "![agreement and regret of each selector](decisions.png)", ""]
    for (group, split, subset), rows in scored.items():
        if subset == "all":
            lines += [f"## {group}: oracle on the {split_text(decisions, split)}", ""]
        lines += [_summary(subset, rows), ""]
        lines += [f"- {line}" for line in verdict_lines(rows)] + [""]
        lines += ["| selector | resolved | agreement % [95%] | regret, points [95%] | only CKA right : only "
                  "selector right | exact p | CKA − selector: agreement, points [95%] | CKA − selector: regret, "
                  "points [95%] | detectable at 80% power: agreement, points / regret, points |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            compared = "pairs" in r
            discordant = (f"{r['cka_only']} : {r['other_only']}" if compared and r["cka_only"] is not None
                          else "")
            detectable = (f"{_points(r['detectable_agreement'])} / {_points(r['detectable_regret'], 2)}"
                          if compared else "")
            lines.append(
                f"| {r['selector']} | {r['resolved']} | "
                f"{_interval(r['agreement_pct'], r['agreement_low'], r['agreement_high'], '%')} | "
                f"{_interval(r['regret'], r['regret_low'], r['regret_high'])} | {discordant} | "
                f"{_p(r['test_p']) if compared else ''} | "
                f"{_interval(r['cka_minus_agreement'], r['cka_minus_agreement_low'], r['cka_minus_agreement_high'], ' pts', True) if compared else ''} | "
                f"{_interval(r['cka_minus_regret'], r['cka_minus_regret_low'], r['cka_minus_regret_high'], signed=True) if compared else ''} | "
                f"{detectable} |")
        lines += [""] + [f"- {line}" for line in detectable_lines(rows)] + [""]
    return "\n".join(lines)


def to_csv(scored: dict) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["group", "oracle_split", "subset"] + COLUMNS)
    for (group, split, subset), rows in scored.items():
        for r in rows:
            writer.writerow([group, split, subset] + [("" if r.get(c) is None else r[c]) if c in COUNTS
                                                      else _num(r.get(c), 4) for c in COLUMNS])
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
        for mark, tag in (("### ", "h3"), ("## ", "h2"), ("# ", "h1"), ("- ", "p")):
            if line.startswith(mark):
                out.append(f"<{tag}>{html.escape(line[len(mark):])}</{tag}>")
                break
        else:
            if line.startswith("!["):
                out.append('<p><img src="decisions.png" alt="agreement and regret of each selector"></p>')
            elif line.strip():
                out.append(f"<p>{html.escape(line)}</p>")
    flush()
    return html_page("Decision quality", "\n".join(out) + "\n")


def plot_png(scored: dict) -> bytes:
    """Agreement and regret of each selector with their intervals, one colour per model, one
    row per oracle split (every decision; the contested ones are in the tables)."""
    import matplotlib
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    groups = [g for (g, split, subset) in scored if split == "val" and subset == "all"]
    names = [r["selector"] for r in scored[(groups[0], "val", "all")]]
    with matplotlib.style.context("default"), matplotlib.rc_context({"font.family": "DejaVu Sans", "font.size": 9}):
        fig = Figure(figsize=(10, 2 * (0.38 * len(names) + 1.3)), dpi=110)
        FigureCanvasAgg(fig)
        axes = fig.subplots(2, 2, sharey=True)
        colours = matplotlib.colormaps["tab10"]
        highest = max((r["regret_high"] if not math.isnan(r["regret_high"]) else r["regret"])
                      for key, rows in scored.items() if key[2] == "all" for r in rows if not math.isnan(r["regret"]))
        for (ax_a, ax_r), split in zip(axes, ORACLE_SPLITS):
            for k, group in enumerate(groups):
                rows = {r["selector"]: r for r in scored[(group, split, "all")]}
                offset = (k - (len(groups) - 1) / 2) * 0.22
                for y, name in enumerate(names):
                    r = rows.get(name)
                    if r is None:
                        continue
                    for ax, m, lo, hi in ((ax_a, r["agreement_pct"], r["agreement_low"], r["agreement_high"]),
                                          (ax_r, r["regret"], r["regret_low"], r["regret_high"])):
                        if math.isnan(m):
                            continue
                        err = None if math.isnan(lo) else [[max(0.0, m - lo)], [max(0.0, hi - m)]]
                        ax.errorbar([m], [y + offset], xerr=err, fmt="o", color=colours(k % 10), capsize=3,
                                    markersize=5)
            ax_a.axvline(50, color="0.5", linestyle="--", linewidth=0.8)
            ax_r.axvline(0, color="0.5", linestyle="--", linewidth=0.8)
            # regrets run from hundredths of a point (close decisions) to tens (a collapsed layer candidate)
            ax_r.set_xscale("symlog", linthresh=0.1)
            ax_r.set_xlim(-0.1, 1.5 * highest)
            ax_a.set_xlim(-5, 105)
            ax_a.set_yticks(range(len(names)), names)
            ax_a.set_xlabel(f"agreement with the {SPLIT_NAMES[split]} oracle\n(%, resolved decisions; 95% interval)")
            ax_r.set_xlabel(f"regret, {SPLIT_NAMES[split]} oracle accuracy points\n(symmetric log scale; 95% interval)")
            for ax in (ax_a, ax_r):
                ax.grid(True, axis="x", color="0.92")
        axes[0][0].invert_yaxis()
        fig.suptitle("Each decision checked against the oracle (intervals respect clustering by run)")
        handles = [Line2D([], [], color=colours(k % 10), marker="o", linestyle="") for k in range(len(groups))]
        fig.legend(handles, groups, loc="lower center", ncols=len(groups), frameon=False, fontsize=8)
        fig.tight_layout(rect=(0, 0.03, 1, 1))
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def write_decisions(roots: list[Path], out: Path) -> list[Path]:
    """Writes ``out/decisions.{md,csv,html,png}``; returns them (none without decisions)."""
    return write_report(read_decisions(roots), out)[0]


def write_report(decisions: list[Decision], out: Path) -> tuple[list[Path], dict]:
    """Writes the pages of ``decisions`` to ``out``; returns the files and the scores."""
    if not decisions:
        return [], {}
    scored = tables(decisions)
    md = to_markdown(decisions, scored)
    files = {out / "decisions.md": md.encode(), out / "decisions.csv": to_csv(scored).encode(),
             out / "decisions.html": to_html(md).encode(), out / "decisions.png": plot_png(scored)}
    for path, data in files.items():
        records.atomic_write_bytes(path, data)
    return list(files), scored

"""Decision quality: every recorded decision checked against its oracle.

A run started with ``--oracle-epochs E`` records, at each iteration, every candidate as the
method saw it (every similarity metric, validation accuracy and loss after the brief
fine-tune, FLOPs, parameters) and the oracle: each candidate fine-tuned E epochs more with
two seeds, then measured on the validation split and on the test split. ``harness decisions``
replays every selector on those records, so one set of runs scores them all on the same
decisions, per model and pooled, with the statistics of :mod:`harness.decision_stats`
(:mod:`harness.decision_pages` writes the page):

- the oracle's answer is the candidate with the higher mean over its seeds; a gap below 1.96
  standard errors (seed spread and the binomial error of the evaluation images together) is a
  **tie**, where either answer is right (:class:`~harness.decision_stats.TieRule`);
- **contested** decisions: the oracle's gap is below ``CONTESTED_BELOW`` points (above it the
  worse candidate collapsed and every sensible selector is right); scored apart as well;
- **agreement**: the share of the decisions the oracle resolves where a selector picks its
  answer; **regret**: the oracle accuracy of the best candidate minus that of the chosen one;
- against linear CKA, on the same decisions: the discordant decisions, the exact McNemar test,
  the agreement difference (Newcombe's paired score interval) and the regret difference;
- every interval is computed on the effective number of decisions, the count divided by the
  design effect of clustering by run (a run-clustered bootstrap, seed 0);
- the smallest agreement difference the exact McNemar test detects at 80% power on these
  decisions, and about how many decisions a 3-point difference needs.

``random`` is the expectation of a uniform choice (compared with an exact binomial test of
CKA's agreement against it), and ``always <type>`` keeps that type's candidate.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from harness import records
from harness.decision_stats import (RunBootstrap, TieRule, binomial_detectable, binomial_exact, binomial_needed,
                                    mcnemar_detectable, mcnemar_exact, mcnemar_needed, newcombe_paired,
                                    normal_detectable, wilson)
from harness.errors import HarnessError, first_line, warn
from harness.leaderboard import find_runs

#: the run's own similarity metric of the paper, against which the others are compared
REFERENCE = "most similar: cka"
ORACLE_SPLITS = ("val", "test")
TIE_RULE = TieRule()
#: points: an oracle gap below this is a contested decision; the collapses of a layer candidate
#: in these records cost 13.5-19.7 points, every other gap is below 2.2
CONTESTED_BELOW = 5.0
#: the agreement difference (fraction) whose required number of decisions each comparison states
SIZED_FOR = 0.03
SUBSETS = ("all", "contested")


@dataclass
class Decision:
    group: str  # "<model> on <data>"
    run: str
    iteration: int
    candidates: list[dict]  # the iteration record's candidates, in tie-break order (layer first)
    accuracies: dict[str, list[list[float]]]  # split -> each candidate's oracle accuracy per seed (%)
    images: dict[str, int | None]  # split -> how many images the oracle's accuracies are measured on
    verdict: dict[str, dict]  # split -> the tie rule's verdict (means, best, gap and its standard errors)
    epochs: float | None = None  # the oracle's horizon
    test_subset: bool = False  # whether the test split was a fixed subset of it (--test-subset)

    @property
    def oracle(self) -> dict[str, list[float]]:
        """split -> mean oracle accuracy of each candidate"""
        return {split: v["means"] for split, v in self.verdict.items()}

    @property
    def best(self) -> dict[str, int | None]:
        """split -> the oracle's answer (None: a tie)"""
        return {split: v["best"] for split, v in self.verdict.items()}


def read_decisions(roots: list[Path], rule=TIE_RULE) -> list[Decision]:
    """Every iteration with an oracle under ``roots`` (runs found as the leaderboard finds
    them), in a stable order, each split's verdict given by ``rule`` (anything with the
    ``verdict(accuracies, images)`` of :class:`~harness.decision_stats.TieRule`)."""
    found = []
    for run_dir in sorted(find_runs(roots), key=lambda p: str(p)):
        try:
            run = records.RunRecord.read(run_dir)
            if run is None:
                continue
            group = f"{run.config['config']['model']} on {run.data_label}"
            sizes = run.config.get("data") or {}
        except (HarnessError, ValueError, KeyError, TypeError, OSError) as exc:
            warn(f"skipping the corrupt run record {run_dir} ({type(exc).__name__}: {first_line(exc, 120)})")
            continue
        malformed = []
        for row in run.iterations:
            cands = row.get("candidates") or []
            if not row.get("oracle") or len(cands) < 2 or not all("oracle" in c for c in cands):
                continue
            accuracies = _oracle_accuracies(cands)
            if accuracies is None:
                malformed.append(str(row["iteration"]))
                continue
            images = {split: sizes.get(split) for split in ORACLE_SPLITS}
            paired = row["oracle"].get("paired_se") or {}  # per-image outcomes: records since the test oracle
            verdict = {split: rule.verdict(accuracies[split], images[split], paired.get(split)) for split in ORACLE_SPLITS}
            found.append(Decision(group, run_dir.name, row["iteration"], cands, accuracies, images, verdict,
                                  row["oracle"].get("epochs"), bool(run.config["config"].get("test_subset"))))
        if malformed:
            warn(f"skipping the decisions of iteration {', '.join(malformed)} of {run_dir}: an oracle accuracy "
                 "there is not a finite number per seed (null, NaN or text)")
    return found


def _oracle_accuracies(cands: list[dict]) -> dict[str, list[list[float]]] | None:
    """split -> each candidate's oracle accuracy per seed; None when any is not a finite number
    (a record that holds null, which NaN is written as, or text) or a candidate has no seed."""
    found = {}
    for split in ORACLE_SPLITS:
        per_candidate = [c["oracle"].get(f"{split}_accuracy") if isinstance(c["oracle"], dict) else None
                         for c in cands]
        for seeds in per_candidate:
            if not isinstance(seeds, list) or not seeds or not all(
                    isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a) for a in seeds):
                return None
        found[split] = per_candidate
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


# ---------------------------------------------------------------- scoring
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


def _array(values: list):
    import numpy as np

    return np.array([math.nan if v is None else v for v in values], dtype=float)


def _compare(ref: tuple, other: tuple, random: bool, boot: RunBootstrap, resolved_share: float) -> dict:
    """Linear CKA (``ref``) against one selector on the same decisions: the discordant
    decisions, the exact test, the agreement and regret differences with their intervals and
    the smallest differences these decisions can detect."""
    import numpy as np

    ra, rr = ref
    a, r = other
    both = ~np.isnan(ra) & ~np.isnan(a)
    n = int(both.sum())
    row = {"pairs": n, "cka_only": None, "other_only": None, "test_p": math.nan, "cka_minus_agreement": math.nan,
           "cka_minus_agreement_low": math.nan, "cka_minus_agreement_high": math.nan,
           "detectable_agreement": None, "needed_decisions": None, "needed_with_oracle": None}
    if n:
        if random:  # its agreement is an expectation: CKA's own agreement against it, exactly
            k, p0 = float(ra[both].sum()), float(a[both].mean())
            deff = boot.design_effect(ra, both)
            low, high = wilson(k / deff, n / deff)
            diff, low, high = k / n - p0, low - p0, high - p0
            p = binomial_exact(int(k), n, p0)
            detect, needed = binomial_detectable(n, p0), binomial_needed(SIZED_FOR, p0)
        else:
            b = int(np.sum(both & (ra == 1) & (a == 0)))
            c = int(np.sum(both & (ra == 0) & (a == 1)))
            agree_both = int(np.sum(both & (ra == 1) & (a == 1)))
            deff = boot.design_effect(ra - a, both)
            diff, low, high = newcombe_paired(agree_both / deff, b / deff, c / deff, (n - agree_both - b - c) / deff)
            p = mcnemar_exact(b, c)
            detect, needed = mcnemar_detectable(n, (b + c) / n), mcnemar_needed(SIZED_FOR, (b + c) / n)
            row |= {"cka_only": b, "other_only": c}
        row |= {"test_p": p, "cka_minus_agreement": 100 * diff, "cka_minus_agreement_low": 100 * low,
                "cka_minus_agreement_high": 100 * high,
                "detectable_agreement": None if detect is None else 100 * detect, "needed_decisions": needed,
                "needed_with_oracle": None if needed is None or not resolved_share
                else math.ceil(needed / resolved_share)}
    dr = rr - r
    m, low, high, se = boot.mean_interval(dr, ~np.isnan(dr))
    row |= {"cka_minus_regret": m, "cka_minus_regret_low": low, "cka_minus_regret_high": high,
            "detectable_regret": normal_detectable(se) if not math.isnan(se) else math.nan}
    return row


def score(decisions: list[Decision], split: str) -> list[dict]:
    """One row per selector: agreement, regret and the comparison with linear CKA, every
    interval widened by the design effect of clustering by run."""
    import numpy as np

    sel = selectors(decisions)
    runs = len({d.run for d in decisions})
    boot = RunBootstrap([d.run for d in decisions])
    ties = sum(1 for d in decisions if d.best[split] is None)
    resolved_share = (len(decisions) - ties) / len(decisions) if decisions else 0.0
    per = {name: tuple(_array(v) for v in outcomes(decisions, fn, split)) for name, fn in sel.items()}
    rows = []
    for name, (agree, regret) in per.items():
        resolved = ~np.isnan(agree)
        n, k = int(resolved.sum()), float(np.nansum(agree))
        row = {"selector": name, "runs": runs, "decisions": int(np.sum(~np.isnan(regret))), "ties": ties,
               "resolved": n, "agreement_pct": 100 * k / n if n else math.nan,
               "agreement_low": math.nan, "agreement_high": math.nan}
        if sel[name] is not None and n:
            deff = boot.design_effect(agree, resolved)
            low, high = wilson(k / deff, n / deff)
            row |= {"agreement_low": 100 * low, "agreement_high": 100 * high}
        m, low, high, _ = boot.mean_interval(regret, ~np.isnan(regret))
        row |= {"regret": m, "regret_low": low if sel[name] else math.nan,
                "regret_high": high if sel[name] else math.nan}
        if REFERENCE in per and name != REFERENCE:
            row |= _compare(per[REFERENCE], (agree, regret), sel[name] is None, boot, resolved_share)
        rows.append(row)
    return rows


def contested(decisions: list[Decision], split: str) -> list[Decision]:
    """The decisions whose oracle gap is below ``CONTESTED_BELOW`` points."""
    return [d for d in decisions if d.verdict[split]["gap"] < CONTESTED_BELOW]


def tables(decisions: list[Decision]) -> dict[tuple[str, str, str], list[dict]]:
    """(group, oracle split, subset) -> scores; the group "all" pools every model, the subset
    "contested" keeps the decisions with an oracle gap below ``CONTESTED_BELOW``."""
    groups = sorted({d.group for d in decisions})
    out = {}
    for split in ORACLE_SPLITS:
        for group in (["all"] if len(groups) > 1 else []) + groups:
            members = [d for d in decisions if group == "all" or d.group == group]
            for subset, chosen in (("all", members), ("contested", contested(members, split))):
                if chosen:
                    out[(group, split, subset)] = score(chosen, split)
    return out

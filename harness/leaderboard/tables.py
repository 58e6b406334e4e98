"""The board: one row per configuration (its seeds merged) plus the published figures, and the
layout of a board page's tables (the main one, then one per evaluator)."""

from __future__ import annotations

import csv
import math
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.errors import HarnessError
from harness.leaderboard.runs import METRICS, TEXT_COLUMNS, Run, is_number, same_configuration

SOURCE_COLUMNS = ["source", "citation", "note"]
REPORTED_FIELDS = ["data", "model", "method", "flops_reduction_pct", "params_reduction_pct", "baseline_accuracy",
                   "accuracy", "accuracy_delta", "citation", "note"]
REPORTED_NUMBERS = ["flops_reduction_pct", "params_reduction_pct", "baseline_accuracy", "accuracy", "accuracy_delta"]
WHERE_PATTERN = re.compile(r"^\s*([^\s!<>=]+)\s*(!=|>=|<=|==|=|>|<)\s*(.*?)\s*$")


def mean_std(values: list) -> tuple[float, float]:
    """Mean and sample standard deviation (NaN below two values); NaN when a value is missing
    or not a finite number (a run that diverged has no mean with the others)."""
    if not values or not all(is_number(v) for v in values):
        return math.nan, math.nan
    values = [float(v) for v in values]
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def oracle_note(members: list[Run]) -> str:
    """What a row's wall time holds besides the method: the oracle's fine-tunes, which the
    records do not time apart (their share of the training epochs is what can be said)."""
    shares = [m.oracle_share for m in members if m.oracle_share is not None]
    if not shares:
        return ""
    return (f"wall time includes the oracle (--oracle-epochs) on {len(shares)} of {len(members)} runs: about "
            f"{100 * statistics.fmean(shares):.0f}% of their training epochs; the records do not time it apart")


def one_per_seed(members: list[Run]) -> tuple[list[Run], str]:
    """The runs of one configuration, one per seed (a seed recorded twice, as a resumed run and
    an uninterrupted one, is one sample: its first run by name counts), and the note saying so."""
    kept, repeats = {}, {}
    for run in members:
        seed = run.row["seed"]
        if seed in kept:
            repeats.setdefault(seed, [kept[seed].row["run"]]).append(run.row["run"])
        else:
            kept[seed] = run
    note = "; ".join(f"seed {seed} recorded {len(names)} times ({', '.join(names)}): {names[0]} counted"
                     for seed, names in sorted(repeats.items()))
    return list(kept.values()), note


def merged_rows(runs: list[Run]) -> list[dict]:
    """One board row per configuration: its complete runs, one per distinct seed."""
    by_configuration: dict[str, list[Run]] = {}
    for run in sorted(runs, key=lambda r: (r.row["seed"], r.row["run"])):
        if run.complete:
            by_configuration.setdefault(same_configuration(run.configuration), []).append(run)
    board = []
    # in the order of the configurations as recorded: boards of records a setting is older than read as before it
    for key in sorted(by_configuration, key=lambda k: min(r.configuration for r in by_configuration[k])):
        members, note = one_per_seed(by_configuration[key])
        row = {c: members[0].row[c] for c in TEXT_COLUMNS}
        row["hardware"] = " / ".join(dict.fromkeys(m.row["hardware"] for m in members))
        row |= {"seeds": float(len(members)),
                "decision_path": " / ".join(m.row["decision_path"] or "-" for m in members),
                "source": "measured", "citation": "", "note": "; ".join(filter(None, (note, oracle_note(members)))),
                "trajectories": [m.trajectory for m in members]}
        numeric = METRICS + sorted({k for m in members for k in m.row if "." in k})
        for col in numeric:
            row[col], row[f"{col}_std"] = mean_std([m.row[col] for m in members if col in m.row])
        board.append(row)
    return board


def read_reported(path: Path) -> list[dict]:
    """Board rows of published figures; empty cells stay empty."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REPORTED_FIELDS if c not in (reader.fieldnames or [])]
        if missing:
            raise HarnessError(f"{path}: missing column(s) {', '.join(missing)}; "
                               f"expected: {', '.join(REPORTED_FIELDS)}")
        rows = []
        for line, entry in enumerate(reader, start=2):
            if not (entry["citation"] or "").strip():
                raise HarnessError(f"{path}:{line}: a reported row needs a citation")
            row = {c: "" for c in TEXT_COLUMNS} | {c: (entry[c] or "").strip() for c in ("data", "model", "method")}
            row |= {"seeds": math.nan, "decision_path": "", "source": "reported",
                    "citation": entry["citation"].strip(), "note": (entry["note"] or "").strip(), "trajectories": []}
            for col in METRICS:
                text = (entry.get(col) or "").strip() if col in REPORTED_NUMBERS else ""
                try:
                    row[col] = float(text) if text else math.nan
                except ValueError:
                    raise HarnessError(f"{path}:{line}: {col} {text!r} is not a number") from None
                row[f"{col}_std"] = math.nan
            rows.append(row)
    return rows


def numeric_columns(board: pd.DataFrame) -> list[str]:
    """The board's number columns (each with a ``_std`` twin), ``seeds`` first."""
    return ["seeds"] + [c for c in board.columns if f"{c}_std" in board.columns]


def display_columns(board: pd.DataFrame) -> list[str]:
    """Column ids in table order: the fixed ones, then evaluator columns, then the source."""
    evaluators = sorted(c for c in numeric_columns(board) if c not in METRICS and c != "seeds")
    return TEXT_COLUMNS + ["seeds", "iterations", "decision_path"] + METRICS[1:] + evaluators + SOURCE_COLUMNS


def build_board(runs: list[Run], reported: list[dict]) -> pd.DataFrame:
    """Merged measured rows and reported rows in one frame; number columns are floats (NaN when empty)."""
    rows = merged_rows(runs) + reported
    numeric = sorted({k for r in rows for k in r if k.endswith("_std")})
    columns = TEXT_COLUMNS + ["seeds", "decision_path"] + [c.removesuffix("_std") for c in numeric] + numeric
    board = pd.DataFrame(rows, columns=columns + SOURCE_COLUMNS + ["trajectories"])
    for col in numeric + [c.removesuffix("_std") for c in numeric] + ["seeds"]:
        board[col] = board[col].astype(float)
    return board


def unknown_column(option: str, column: str, board: pd.DataFrame) -> HarnessError:
    return HarnessError(f"unknown column {column!r} in {option}; valid columns: {', '.join(display_columns(board))}")


def apply_where(board: pd.DataFrame, condition: str) -> pd.DataFrame:
    """Keep the rows matching ``COLUMN OP VALUE`` (OP: = != > >= < <=; numbers compare by mean)."""
    match = WHERE_PATTERN.match(condition)
    if not match:
        raise HarnessError(f"--where {condition!r} is not COLUMN OP VALUE with OP one of =, !=, >, >=, <, <=")
    column, op, value = match.groups()
    if column not in display_columns(board):
        raise unknown_column("--where", column, board)
    if column in numeric_columns(board):
        try:
            number = float(value)
        except ValueError:
            raise HarnessError(f"--where {condition!r}: {column} is numeric and {value!r} is not a number") from None
        series = board[column]
        masks = {"=": series == number, "==": series == number, "!=": series != number, ">": series > number,
                 ">=": series >= number, "<": series < number, "<=": series <= number}
        return board[masks[op]]
    if op not in ("=", "==", "!="):
        raise HarnessError(f"--where {condition!r}: {column} is text; use = or !=")
    equal = board[column].fillna("").astype(str) == value
    return board[equal if op != "!=" else ~equal]


def apply_sort(board: pd.DataFrame, sort: str) -> pd.DataFrame:
    """Sort by one column (a leading '-' for descending); empty cells go last; ties keep their order."""
    column, descending = (sort[1:], True) if sort.startswith("-") else (sort, False)
    if column not in display_columns(board):
        raise unknown_column("--sort", column, board)
    key = None if column in numeric_columns(board) else (lambda s: s.fillna("").astype(str))
    return board.sort_values(column, ascending=not descending, na_position="last", kind="stable", key=key)


# ---------------------------------------------------------------- a page's tables
# what tells the rows of one page apart (its model and data are the page's title)
IDENTITY_COLUMNS = ["method", "criterion", "similarity", "options", "structures", "budget", "stop", "hardware",
                    "seeds"]
# what a reader compares first (the method and the numbers), then how the rows were made
MAIN_COLUMNS = (["method", "criterion", "similarity", "options", "structures"] + METRICS[1:-1]
                + ["seeds", "budget", "stop", "iterations", "decision_path", "hardware", "wall_time_s", "source", "note"])


@dataclass
class Table:
    """One table of a board page: the main one (``evaluator`` None) or one evaluator's numbers."""

    evaluator: str | None
    rows: pd.DataFrame
    columns: list[str]


def evaluator_name(column: str) -> str | None:
    """``fgsm`` for ``fgsm.eps_1_255``; None for a column of the main table."""
    return column.split(".", 1)[0] if "." in column else None


def csv_columns(board: pd.DataFrame, group: pd.DataFrame) -> list[str]:
    """Every column of a page's CSV: the board's, less evaluator columns without a number in
    ``group`` and ``options`` when no row changed one."""
    return [c for c in display_columns(board)
            if (evaluator_name(c) is None or group[c].notna().any()) and (c != "options" or group[c].astype(bool).any())]


def page_tables(group: pd.DataFrame) -> list[Table]:
    """The main table (all rows, the columns a reader compares), then one table per evaluator
    that has numbers in some row: those rows, the columns that identify them and its numbers.
    ``options`` and ``note`` show when a row has one, ``structures`` when the measured rows differ in it."""
    measured = group[group["source"] == "measured"]
    hidden = {c for c in ("options", "note") if not group[c].astype(bool).any()}
    if measured["structures"].nunique() <= 1:
        hidden.add("structures")
    tables = [Table(None, group, [c for c in MAIN_COLUMNS if c not in hidden])]
    identity = [c for c in IDENTITY_COLUMNS if c not in hidden]
    numbers: dict[str, list[str]] = {}
    for column in sorted(c for c in group.columns if evaluator_name(c) and not c.endswith("_std")):
        if group[column].notna().any():
            numbers.setdefault(evaluator_name(column), []).append(column)
    for name, columns in numbers.items():
        rows = group[group[columns].notna().any(axis=1)]
        tables.append(Table(name, rows, identity + columns))
    return tables

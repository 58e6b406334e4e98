"""Leaderboards built from run records and published figures.

``load_table`` gives one row per run (``harness bench`` prints it for the runs it made).
``write_leaderboards`` rebuilds a leaderboard folder: for each (data label, model) group a
Markdown table, a CSV, a static HTML page with a sortable table, and a plot of accuracy
against FLOPs reduction; and an index linking them. Runs of one configuration that differ
only in seed become one row (mean and sample standard deviation over the seeds). Published
figures come from ``reported.csv`` and are marked as reported in every format.

Everything written is a function of the records alone (stable order, fixed number formats,
no timestamps, PNG metadata off), so CI can rebuild the pages and compare them byte for byte.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness import records, schema
from harness.errors import HarnessError

REPORTED_FILE = "reported.csv"
TABLES_DIR = "tables"
GENERATED_SUFFIXES = (".md", ".csv", ".html", ".png")
DEFAULT_SORT = "-flops_reduction_pct"

# config fields that do not make a configuration different: runs differing only in these merge
# (the oracle and the decision records add measurements without changing what the run keeps)
NOT_CONFIGURATION = {"seed", "name", "runs_dir", "cache_dir", "device", "data_dir", "oracle_epochs",
                     "record_decisions", "parallel_candidates"}
TEXT_COLUMNS = ["model", "data", "method", "criterion", "similarity", "options", "structures", "budget", "stop",
                "hardware"]
METRICS = ["iterations", "flops_reduction_pct", "params_reduction_pct", "baseline_accuracy", "accuracy",
           "accuracy_delta", "wall_time_s"]
SOURCE_COLUMNS = ["source", "citation", "note"]
REPORTED_FIELDS = ["data", "model", "method", "flops_reduction_pct", "params_reduction_pct", "baseline_accuracy",
                   "accuracy", "accuracy_delta", "citation", "note"]
REPORTED_NUMBERS = ["flops_reduction_pct", "params_reduction_pct", "baseline_accuracy", "accuracy", "accuracy_delta"]
HEADERS = {
    "decision_path": "decision path", "flops_reduction_pct": "FLOPs reduction %",
    "params_reduction_pct": "params reduction %", "baseline_accuracy": "baseline accuracy",
    "accuracy_delta": "accuracy Δ", "wall_time_s": "wall time (s)",
}
WHERE_PATTERN = re.compile(r"^\s*([^\s!<>=]+)\s*(!=|>=|<=|==|=|>|<)\s*(.*?)\s*$")

EXPLANATION = (
    "Each table covers one data set and one model. Data sets are told apart by their label, so "
    "CIFAR-10 read from JPEG files (\"CIFAR-10 (JPEG)\") never shares a table with the original CIFAR-10 "
    "files (\"CIFAR-10\"). A **measured** row is one configuration run with this harness: each run "
    "contributes the model it keeps (its final iteration; under `--stop-on-drop` the last one within the "
    "tolerance) against its own unpruned model (iteration 0): FLOPs and parameter reductions in %, test "
    "accuracy before (baseline) and after, their difference in points (accuracy Δ), the wall time of all "
    "its iterations, and `<evaluator>.<key>` columns for the numbers its extra evaluators reported on the "
    "kept model. `options` lists the plugin options a run changed from their defaults (shown when any "
    "row of a table has one); runs that differ in an option are separate rows. Runs that differ only in "
    "seed are merged: numbers are mean ± sample standard deviation, "
    "`seeds` counts the runs, and their decision paths are listed (L a layer candidate was kept, F a "
    "filter one, H heads, N neurons). Only complete runs count. A **reported** row is a published figure "
    "(`reported.csv`, with its citation and a note on what the source gives): it was not measured here, "
    "and its training budget and FLOPs counting may differ, so it is a reference point rather than a "
    "like-for-like result. Measured and reported numbers never share a row or a cell. In the plots, "
    "filled markers are measured (with ± bars over seeds and each run's trajectory as a faint line) and "
    "hollow markers are reported."
)
COLUMNS_NOTE = ("Columns for `harness leaderboard --sort` and `--where` (as in the CSV files, numeric ones "
                "without their `_mean`/`_std` suffix): {columns}.")

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:#1f2328;
background:#fff;margin:0;padding:1.2rem 1.5rem 3rem}
h1{font-size:1.45rem;margin:.4rem 0 .5rem}
a{color:#0969da;text-decoration:none}a:hover{text-decoration:underline}
p{max-width:75rem}.muted{color:#57606a}
figure{margin:1rem 0}figure img{max-width:100%;height:auto;border:1px solid #d0d7de;border-radius:6px}
.scroll{overflow-x:auto;border:1px solid #d0d7de;border-radius:6px}.scroll.index{display:inline-block;max-width:100%}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{padding:.35rem .65rem;border-bottom:1px solid #eaeef2;text-align:left;white-space:nowrap;vertical-align:top}
th{background:#f6f8fa;font-weight:600;position:sticky;top:0}
table.board th{cursor:pointer;user-select:none}table.board th:hover{background:#eaeef2}
th[aria-sort=ascending]::after{content:" \\25B2";font-size:.7em}
th[aria-sort=descending]::after{content:" \\25BC";font-size:.7em}
td.num{text-align:right}td.note{max-width:26rem;overflow:hidden;text-overflow:ellipsis;font-size:12px;color:#57606a}
tr.reported td{background:#fff8e6}tbody tr:hover td{background:#eef5ff}
.badge{display:inline-block;padding:0 .45rem;border-radius:1rem;font-size:11px;font-weight:600;margin-right:.3rem}
.badge.measured{background:#dafbe1;color:#116329}.badge.reported{background:#fff1c2;color:#7d4e00}
""".strip()

SORT_SCRIPT = """
for (const table of document.querySelectorAll("table.board")) {
  const heads = [...table.tHead.rows[0].cells];
  heads.forEach((th, col) => th.addEventListener("click", () => {
    const ascending = th.getAttribute("aria-sort") !== "ascending";
    heads.forEach(h => h.removeAttribute("aria-sort"));
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    const numeric = th.dataset.type === "num";
    const key = row => {
      const cell = row.cells[col], text = cell.dataset.value ?? cell.textContent.trim();
      return numeric ? (text === "" ? NaN : Number(text)) : text;
    };
    const rows = [...table.tBodies[0].rows].sort((a, b) => {
      const x = key(a), y = key(b);
      if (!numeric) return ascending ? x.localeCompare(y) : y.localeCompare(x);
      if (isNaN(x) || isNaN(y)) return isNaN(x) - isNaN(y);  // empty cells last either way
      return ascending ? x - y : y - x;
    });
    table.tBodies[0].append(...rows);
  }));
}
""".strip()


# ---------------------------------------------------------------- run records
@dataclass
class Run:
    """One run record: its row, the key of its configuration and its trajectory."""

    row: dict
    configuration: str  # every config field but NOT_CONFIGURATION, as sorted JSON
    trajectory: list[tuple[float, float]]  # (FLOPs reduction %, accuracy delta), iterations 0..final
    complete: bool


def find_runs(roots: list[Path]) -> list[Path]:
    """Run directories given directly or anywhere below a folder (records grouped by
    benchmark: ``records/table3/<run>``), each once."""
    found: dict[Path, Path] = {}
    for root in roots:
        root = Path(root)
        candidates = [root] if (root / records.CONFIG_FILE).exists() else (
            sorted(p.parent for p in root.rglob(records.CONFIG_FILE)) if root.is_dir() else [])
        for run_dir in candidates:
            found.setdefault(run_dir.resolve(), run_dir)
    return list(found.values())


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def evaluator_columns(evaluation: schema.Evaluation | None) -> dict[str, float]:
    """``<evaluator>.<key>`` for each number at the top level of an evaluator's result, and
    ``<evaluator>.<key>_delta`` for each number in its ``delta`` dict, when it reports one."""
    columns = {}
    for name, result in sorted(((evaluation or {}).get("results") or {}).items()):
        for key, value in result.items():
            if is_number(value):
                columns[f"{name}.{key}"] = float(value)
        deltas = result.get("delta")
        if isinstance(deltas, dict):
            for key, value in deltas.items():
                if is_number(value):
                    columns[f"{name}.{key}_delta"] = float(value)
    return columns


def options_text(record: schema.RunConfig) -> str:
    """The plugin options a run changed from their defaults, as ``name=value`` (the defaults
    come from the record, or for older records from the installed plugins)."""
    options = record["config"].get("options") or {}
    defaults = record.get("option_defaults")
    if defaults is None:
        from harness import plugins

        try:
            defaults = {k: o.default for k, o in plugins.all_options().items()}
        except HarnessError:
            defaults = {}
    changed = {k: v for k, v in options.items() if k in defaults and v != defaults[k]}
    return " ".join(f"{k}={json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v}"
                    for k, v in sorted(changed.items()))


def stop_text(cfg: dict) -> str:
    """The run's stopping rules, briefly: at most K iterations, a FLOPs target, an accuracy tolerance."""
    rules = [f"K={cfg['iterations']}"] if cfg.get("iterations") is not None else []
    if cfg.get("target_flops") is not None:
        rules.append(f"FLOPs -{cfg['target_flops']:g}%")
    if cfg.get("stop_on_drop") is not None:
        # on the validation split, or on the test split in records from before it existed
        rules.append(f"{'val ' if cfg.get('val_size') else ''}drop > {cfg['stop_on_drop']:g}")
    return ", ".join(rules)


def hardware_text(hardware: schema.Hardware | None) -> str:
    """Where the wall times were measured: the GPU's name, or the CPU's thread count."""
    if not hardware:
        return ""
    if hardware.get("device") == "cuda":
        return hardware.get("name") or "GPU"
    return f"CPU, {hardware.get('threads')} threads"


def read_run(run_dir: Path) -> Run | None:
    """The model a run keeps (its final iteration) against its unpruned model; None before
    iteration 0 is recorded. Schema-1 records (no data label, no final_iteration) load too."""
    run_dir = Path(run_dir)
    run = schema.RunRecord.read(run_dir)
    if run is None:
        return None
    record, cfg, rows, final, kept = run.config, run.config["config"], run.iterations, run.final_iteration, run.kept
    base, last = rows[0], kept[-1]
    row = {
        "model": cfg["model"], "data": run.data_label,
        "method": cfg["method"], "criterion": cfg["criterion"], "similarity": cfg["similarity"],
        "options": options_text(record), "structures": ",".join(cfg.get("structures") or []), "budget": cfg.get("budget") or "",
        "stop": stop_text(cfg), "hardware": hardware_text(record.get("hardware")),
        "seed": cfg["seed"], "iterations": final,
        "decision_path": "".join(r["decision"] or "" for r in kept[1:]),
        "flops_reduction_pct": last.get("flops_reduction_pct", 0.0),
        "params_reduction_pct": last.get("params_reduction_pct", 0.0),
        "baseline_accuracy": base["accuracy"], "accuracy": last["accuracy"],
        "accuracy_delta": last.get("accuracy_delta", 0.0),
        # every iteration's time, the ones past the kept model included: the run spent it
        "wall_time_s": round(sum(r.get("wall_time_s") or 0.0 for r in rows[1:]), 2),
    }
    row |= evaluator_columns(run.evaluations.get(final))
    row |= {"complete": run.complete, "run": run_dir.name}
    configuration = json.dumps({k: v for k, v in cfg.items() if k not in NOT_CONFIGURATION} | {"data": row["data"]},
                               sort_keys=True)
    trajectory = [(r.get("flops_reduction_pct", 0.0), r.get("accuracy_delta", 0.0)) for r in kept]
    return Run(row, configuration, trajectory, run.complete)


def read_runs(roots: list[Path]) -> list[Run]:
    """Every readable run under ``roots``; a corrupt record is skipped with a one-line warning
    naming it, so that one broken run never takes a whole board (or a sweep's rebuild) down."""
    runs = []
    for path in find_runs(roots):
        try:
            run = read_run(path)
        except (HarnessError, ValueError, KeyError, TypeError, AttributeError, IndexError, OSError) as exc:
            print(f"harness: warning: skipping the corrupt run record {path} ({type(exc).__name__}: "
                  f"{str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ''})", file=sys.stderr)
            continue
        if run:
            runs.append(run)
    return runs


def load_table(roots: list[Path]) -> pd.DataFrame:
    """One row per run (complete or not), for ``harness bench`` to print."""
    rows = [run.row for run in read_runs(roots)]
    # the first eight columns keep the order of earlier versions, which scripts may index into
    fixed = ["data", "model", "method", "criterion", "similarity", "seed", "iterations", "decision_path",
             *METRICS[1:], "structures", "budget", "stop", "hardware", "options"]
    evaluators = sorted({k for r in rows for k in r} - set(fixed) - {"complete", "run"})
    df = pd.DataFrame(rows, columns=fixed + evaluators + ["complete", "run"])
    return df.sort_values(["data", "model", "flops_reduction_pct", "run"], ascending=[True, True, False, True],
                          ignore_index=True)


def to_markdown(df: pd.DataFrame) -> str:
    def cell(v):
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.2f}"
        return "" if v is None else str(v).replace("|", "\\|")

    header = "| " + " | ".join(df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


# ---------------------------------------------------------------- the board: merged runs and reported rows
def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (NaN below two values)."""
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def merged_rows(runs: list[Run]) -> list[dict]:
    """One board row per configuration: its complete runs over seeds."""
    by_configuration: dict[str, list[Run]] = {}
    for run in sorted(runs, key=lambda r: (r.row["seed"], r.row["run"])):
        if run.complete:
            by_configuration.setdefault(run.configuration, []).append(run)
    board = []
    for key in sorted(by_configuration):
        members = by_configuration[key]
        row = {c: members[0].row[c] for c in TEXT_COLUMNS}
        row["hardware"] = " / ".join(dict.fromkeys(m.row["hardware"] for m in members))
        row |= {"seeds": float(len(members)),
                "decision_path": " / ".join(m.row["decision_path"] or "-" for m in members),
                "source": "measured", "citation": "", "note": "",
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
    return ["seeds"] + [c for c in board.columns if f"{c}_std" in board.columns]


def display_columns(board: pd.DataFrame) -> list[str]:
    """Column ids in table order: the fixed ones, then evaluator columns, then the source."""
    evaluators = sorted(c for c in numeric_columns(board) if c not in METRICS and c != "seeds")
    return TEXT_COLUMNS + ["seeds", "iterations", "decision_path"] + METRICS[1:] + evaluators + SOURCE_COLUMNS


def build_board(runs: list[Run], reported: list[dict]) -> pd.DataFrame:
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


# ---------------------------------------------------------------- formatting
def number_text(value: float, decimals: int, signed: bool = False) -> str:
    if round(value, decimals) == 0:
        value = 0.0  # never "-0.00"
    return f"{value:+.{decimals}f}" if signed else f"{value:.{decimals}f}"


def evaluator_text(value: float, signed: bool) -> str:
    text = f"{value:.4g}"
    return f"+{text}" if signed and value > 0 else text


def cell_text(row: pd.Series, column: str, numeric: set[str]) -> str:
    """A cell as shown in Markdown and HTML: "mean ± std" for merged runs."""
    if column == "source":
        return "measured" if row["source"] == "measured" else f"reported ({row['citation']})"
    if column not in numeric:
        value = row[column]
        return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
    mean, std = row[column], row.get(f"{column}_std", math.nan)
    if math.isnan(mean):
        return ""
    signed = column.endswith("delta")
    if column not in METRICS and column != "seeds":
        texts = [evaluator_text(mean, signed)] + ([] if math.isnan(std) else [evaluator_text(std, False)])
    else:
        decimals = {"seeds": 0, "wall_time_s": 0, "iterations": 0 if math.isnan(std) else 1}.get(column, 2)
        texts = [number_text(mean, decimals, signed)] + ([] if math.isnan(std) else [number_text(std, decimals)])
    return " ± ".join(texts)


def csv_number(value: float) -> str:
    return "" if math.isnan(value) else repr(round(value, 6) + 0.0)


def table_csv(group: pd.DataFrame, columns: list[str], numeric: set[str]) -> str:
    """Machine-readable: numbers as separate _mean and _std columns, citation on its own."""
    header = []
    for c in columns:
        header += [f"{c}_mean", f"{c}_std"] if c in numeric and c != "seeds" else [c]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for _, row in group.iterrows():
        cells = []
        for c in columns:
            if c == "seeds":
                cells.append("" if math.isnan(row[c]) else str(int(row[c])))
            elif c in numeric:
                cells += [csv_number(row[c]), csv_number(row[f"{c}_std"])]
            else:
                cells.append(str(row[c]))
        writer.writerow(cells)
    return buffer.getvalue()


def markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table_markdown(title: str, slug: str, group: pd.DataFrame, columns: list[str], numeric: set[str]) -> str:
    shown = [c for c in columns if c != "citation"]
    lines = [f"# Leaderboard: {title}", "",
             f"Generated by `harness leaderboard`; see [the index](../index.md) for what the columns mean. "
             f"Rows marked *reported* are published figures, not measured here. "
             f"Also as [HTML]({slug}.html) and [CSV]({slug}.csv).", "",
             f"![accuracy delta against FLOPs reduction: {title}]({slug}.png)", "",
             "| " + " | ".join(markdown_cell(HEADERS.get(c, c)) for c in shown) + " |",
             "|" + "|".join("---:" if c in numeric else "---" for c in shown) + "|"]
    for _, row in group.iterrows():
        lines.append("| " + " | ".join(markdown_cell(cell_text(row, c, numeric)) for c in shown) + " |")
    return "\n".join(lines) + "\n"


def html_page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(title)}</title>\n<style>\n{CSS}\n</style>\n</head>\n<body>\n{body}</body>\n</html>\n")


def table_html(title: str, slug: str, group: pd.DataFrame, columns: list[str], numeric: set[str],
               sort: str) -> str:
    shown = [c for c in columns if c != "citation"]
    sorted_by, direction = (sort[1:], "descending") if sort.startswith("-") else (sort, "ascending")
    heads = []
    for c in shown:
        kind = "num" if c in numeric else "text"
        aria = f' aria-sort="{direction}"' if c == sorted_by else ""
        heads.append(f'<th data-type="{kind}" title="{html.escape(c)}"{aria}>{html.escape(HEADERS.get(c, c))}</th>')
    body_rows = []
    for _, row in group.iterrows():
        cells = []
        for c in shown:
            text = html.escape(cell_text(row, c, numeric))
            if c in numeric:
                cells.append(f'<td class="num" data-value="{csv_number(row[c])}">{text}</td>')
            elif c == "source":
                label = row["source"]
                cite = "" if label == "measured" else " " + html.escape(row["citation"])
                cells.append(f'<td data-value="{html.escape(cell_text(row, c, numeric))}">'
                             f'<span class="badge {label}">{label}</span>{cite}</td>')
            else:
                # a long note is cut to one line; the whole of it shows on hover
                cells.append(f'<td class="note" title="{text}">{text}</td>' if c == "note" else f"<td>{text}</td>")
        body_rows.append(f'<tr class="{row["source"]}">' + "".join(cells) + "</tr>")
    measured = int((group["source"] == "measured").sum())
    body = (
        f'<p><a href="../index.html">&larr; all leaderboards</a></p>\n<h1>{html.escape(title)}</h1>\n'
        f'<p class="muted">{measured} measured row(s), {len(group) - measured} reported row(s). Measured rows are '
        f"runs of this harness (mean ± sample std over seeds); reported rows, shaded, are published figures with "
        f'their citation. See <a href="../index.html">the index</a> for what each column means. Click a column '
        f'header to sort. Also as <a href="{slug}.csv">CSV</a> and <a href="{slug}.md">Markdown</a>.</p>\n'
        f'<figure><img src="{slug}.png" alt="accuracy delta against FLOPs reduction: {html.escape(title)}">'
        f"</figure>\n"
        f'<div class="scroll"><table class="board">\n<thead><tr>{"".join(heads)}</tr></thead>\n<tbody>\n'
        + "\n".join(body_rows) + f"\n</tbody></table></div>\n<script>\n{SORT_SCRIPT}\n</script>\n"
    )
    return html_page(f"Leaderboard: {title}", body)


# ---------------------------------------------------------------- the plot
def series_labels(measured: pd.DataFrame) -> list[str]:
    """One plot series per method, told apart by criterion, similarity or stopping rule where
    a method's rows differ in them ("cka · rbf-cka")."""
    varying = {method: [c for c in ("criterion", "similarity", "stop") if rows[c].nunique() > 1]
               for method, rows in measured.groupby("method")}
    return [" · ".join([row["method"], *(row[c] for c in varying[row["method"]])]) for _, row in measured.iterrows()]


def plot_png(title: str, group: pd.DataFrame) -> bytes:
    """Accuracy delta against FLOPs reduction: filled markers (± bars over seeds) and faint
    trajectories for measured rows, hollow markers for reported ones; one colour per method
    (per series of a method, see series_labels)."""
    import matplotlib
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    measured = group[group["source"] == "measured"]
    measured = measured.assign(series=series_labels(measured))
    reported = group[group["source"] == "reported"]
    methods = list(dict.fromkeys(sorted(measured["series"]) + sorted(reported["method"])))
    palette = matplotlib.colormaps["tab20"].colors
    order = list(range(0, 20, 2)) + list(range(1, 20, 2))  # the strong colours first
    colour = {m: palette[order[i % 20]] for i, m in enumerate(methods)}
    hollow = ["s", "^", "D", "v", "P", "X", "<", ">", "h", "p"]  # ten shapes for the ten colour families
    with matplotlib.style.context("default"), matplotlib.rc_context({"font.family": "DejaVu Sans", "font.size": 9}):
        fig = Figure(figsize=(9.5, 5.4), dpi=110)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.axhline(0, color="0.55", linewidth=0.8, linestyle="--", zorder=0)
        ax.grid(True, color="0.92", linewidth=0.6, zorder=0)
        for method, rows in measured.groupby("series", sort=True):
            for trajectories in rows["trajectories"]:
                for points in trajectories:
                    xs, ys = zip(*points)
                    ax.plot(xs, ys, color=colour[method], alpha=0.3, linewidth=1, zorder=1)
            ax.errorbar(rows["flops_reduction_pct"], rows["accuracy_delta"],
                        xerr=rows["flops_reduction_pct_std"].fillna(0), yerr=rows["accuracy_delta_std"].fillna(0),
                        fmt="o", markersize=7, capsize=3, color=colour[method], markeredgecolor="white",
                        markeredgewidth=0.8, zorder=3, label=f"{method} (measured)")
        plotted = reported.dropna(subset=["flops_reduction_pct", "accuracy_delta"])
        for method in sorted(plotted["method"].unique()):
            rows = plotted[plotted["method"] == method]
            k = methods.index(method)  # methods k and k+10 share a colour family: shift their shapes apart
            ax.scatter(rows["flops_reduction_pct"], rows["accuracy_delta"], marker=hollow[(k + k // 10) % 10], s=42,
                       facecolors="none", edgecolors=[colour[method]], linewidths=1.3, zorder=2,
                       label=f"{method} (reported)")
        left_out = len(reported) - len(plotted)
        if left_out:
            ax.text(0.01, 0.015, f"{left_out} reported row(s) without an accuracy delta: in the table only",
                    transform=ax.transAxes, fontsize=7.5, color="0.4")
        ax.set_xlabel("FLOPs reduction (%)")
        ax.set_ylabel("accuracy Δ vs. the unpruned model (points)")
        ax.set_title(title)
        handles, labels = ax.get_legend_handles_labels()
        if labels:  # measured series first, then reported ones, each alphabetical
            pairs = sorted(zip(labels, handles), key=lambda p: (p[0].endswith("(reported)"), p[0].lower()))
            ax.legend([h for _, h in pairs], [lab for lab, _ in pairs], loc="upper left", bbox_to_anchor=(1.01, 1.0),
                      fontsize=8, frameon=False, ncols=2 if len(pairs) > 22 else 1, title="\n".join(
                          (["filled: measured (± std over seeds,", "faint lines: each run's iterations)"]
                           if len(measured) else []) + (["hollow: reported (published)"] if len(plotted) else [])),
                      title_fontsize=7.5, alignment="left")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


# ---------------------------------------------------------------- pages
def natural(text: str) -> list:
    """A sort key that puts resnet32 before resnet110."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part.lower()) for part in re.split(r"(\d+)", text)]


def slugify(text: str) -> str:
    """'CIFAR-10 (JPEG)' -> 'cifar10-jpeg': a hyphen before a number goes, other runs of
    anything but letters and digits become one '-' ('tiny-resnet' stays)."""
    text = re.sub(r"(?<=[a-z])-(?=[0-9])", "", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "unnamed"


def index_pages(groups: list[tuple[str, str, str, pd.DataFrame]], columns: str) -> tuple[str, str]:
    """The index in Markdown and HTML: the explanation and a link to every table."""
    explanation, columns_note = EXPLANATION, COLUMNS_NOTE.format(columns=columns)
    md = ["# Leaderboards", "", explanation, "", columns_note, "",
          "| data | model | measured rows | reported rows | pages |", "|---|---|---:|---:|---|"]
    rows_html = []
    for data, model, slug, group in groups:
        measured = int((group["source"] == "measured").sum())
        base = f"{TABLES_DIR}/{slug}"
        md.append(f"| {markdown_cell(data)} | {markdown_cell(model)} | {measured} | {len(group) - measured} | "
                  f"[table]({base}.md) · [HTML]({base}.html) · [CSV]({base}.csv) · [plot]({base}.png) |")
        rows_html.append(
            f"<tr><td>{html.escape(data)}</td><td>{html.escape(model)}</td><td class=\"num\">{measured}</td>"
            f'<td class="num">{len(group) - measured}</td><td><a href="{base}.html">table</a> · '
            f'<a href="{base}.csv">CSV</a> · <a href="{base}.md">Markdown</a> · '
            f'<a href="{base}.png">plot</a></td></tr>')
    if not groups:
        md.append("| (no rows match) | | | | |")
    paragraphs = []
    for text in (explanation, columns_note):
        text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(text, quote=False))
        paragraphs.append("<p>" + re.sub(r"`(.+?)`", r"<code>\1</code>", text) + "</p>\n")
    body = (f"<h1>Leaderboards</h1>\n{''.join(paragraphs)}<div class=\"scroll index\"><table>\n<thead><tr><th>data</th>"
            f"<th>model</th><th>measured rows</th><th>reported rows</th><th>pages</th></tr></thead>\n<tbody>\n"
            + "\n".join(rows_html) + "\n</tbody></table></div>\n")
    return "\n".join(md) + "\n", html_page("Leaderboards", body)


def write_leaderboards(roots: list[Path], out: Path, sort: str | None = None, where: list[str] | None = None,
                       reported: Path | None = None) -> list[Path]:
    """Rebuild ``out/index.{md,html}`` and ``out/tables/<data>_<model>.{md,csv,html,png}`` from the
    complete runs under ``roots`` and the published figures in ``reported`` (default
    ``out/reported.csv``, when present). Returns the files written; none when there is nothing
    to show. Stale generated files in ``out/tables`` are removed; nothing else in ``out`` is touched."""
    out = Path(out)
    runs = read_runs(roots)
    reported = Path(reported) if reported else out / REPORTED_FILE
    published = read_reported(reported) if reported.exists() else []
    if not any(run.complete for run in runs) and not published:
        return []
    board = build_board(runs, published)
    for condition in where or []:
        board = apply_where(board, condition)
    sort = sort or DEFAULT_SORT
    board = apply_sort(board, sort)

    files: dict[Path, bytes] = {}
    groups, taken = [], set()
    keys = sorted(board.groupby(["data", "model"]).groups, key=lambda k: (natural(k[0]), natural(k[1])))
    for data, model in keys:
        group = board[(board["data"] == data) & (board["model"] == model)]
        slug = f"{slugify(data)}_{slugify(model)}"
        while slug in taken:  # two labels with one slug: keep both, deterministically
            slug += "-2"
        taken.add(slug)
        evaluators = set(numeric_columns(board)) - set(METRICS) - {"seeds"}
        columns = [c for c in display_columns(board)
                   if (c not in evaluators or group[c].notna().any()) and (c != "options" or group[c].astype(bool).any())]
        numeric = set(numeric_columns(board))
        title = f"{model} on {data}"
        base = out / TABLES_DIR / slug
        files[base.with_suffix(".md")] = table_markdown(title, slug, group, columns, numeric).encode()
        files[base.with_suffix(".csv")] = table_csv(group, columns, numeric).encode()
        files[base.with_suffix(".html")] = table_html(title, slug, group, columns, numeric, sort).encode()
        files[base.with_suffix(".png")] = plot_png(title, group)
        groups.append((data, model, slug, group))
    index_md, index_html = index_pages(groups, ", ".join(display_columns(board)))
    files = {out / "index.md": index_md.encode(), out / "index.html": index_html.encode()} | files

    tables = out / TABLES_DIR
    if tables.is_dir():
        for stale in sorted(tables.iterdir()):
            if stale.suffix in GENERATED_SUFFIXES and stale not in files:
                stale.unlink()
    for path, data in files.items():
        records.atomic_write_bytes(path, data)
    return list(files)

"""Board tables as text: cell formats, the one Markdown table writer (``harness bench``'s
summary and the board pages), the CSV and the HTML pages."""

from __future__ import annotations

import csv
import html
import io
import math
import re
from importlib import resources

import pandas as pd

from harness.leaderboard.runs import METRICS
from harness.leaderboard.tables import Table, evaluator_name

HEADERS = {
    "decision_path": "decision path", "flops_reduction_pct": "FLOPs reduction %",
    "params_reduction_pct": "params reduction %", "baseline_accuracy": "baseline accuracy",
    "accuracy_delta": "accuracy Δ", "wall_time_s": "wall time (s)",
}


def static_text(name: str) -> str:
    """A file of the package's ``static/`` folder (shipped as package data)."""
    return resources.files("harness.leaderboard").joinpath("static", name).read_text(encoding="utf-8").strip()


CSS = static_text("board.css")
SORT_SCRIPT = static_text("board.js")


# ---------------------------------------------------------------- cells
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


def header_text(column: str) -> str:
    """A column's header: ``fgsm.eps_1_255_delta`` shows as "eps_1_255 Δ" under its evaluator's heading."""
    if evaluator_name(column):
        key = column.split(".", 1)[1]
        return f"{key.removesuffix('_delta')} Δ" if key.endswith("_delta") else key
    return HEADERS.get(column, column)


def csv_number(value: float) -> str:
    return "" if math.isnan(value) else repr(round(value, 6) + 0.0)


# ---------------------------------------------------------------- CSV
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


# ---------------------------------------------------------------- Markdown
def markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(headers: list[str], rows: list[list[str]], right_aligned: list[bool] | None = None) -> str:
    """A Markdown table of text cells, escaped here; ``right_aligned`` per column (numbers)."""
    right_aligned = right_aligned or [False] * len(headers)
    lines = ["| " + " | ".join(markdown_cell(h) for h in headers) + " |",
             "|" + "|".join("---:" if right else "---" for right in right_aligned) + "|"]
    lines += ["| " + " | ".join(markdown_cell(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def to_markdown(df: pd.DataFrame) -> str:
    """A data frame as a Markdown table, numbers with two decimals (``harness bench``'s summary)."""
    def cell(v) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.2f}"
        return "" if v is None else str(v)

    return markdown_table([str(c) for c in df.columns], [[cell(v) for v in row] for row in df.itertuples(index=False)])


def board_table_markdown(table: Table, numeric: set[str]) -> str:
    return markdown_table([header_text(c) for c in table.columns],
                          [[cell_text(row, c, numeric) for c in table.columns] for _, row in table.rows.iterrows()],
                          [c in numeric for c in table.columns])


def evaluator_note(name: str) -> str:
    return (f"What the `{name}` evaluator reported on the kept model, for the rows that ran it "
            f"(`{name}.<key>` columns in the CSV, `--sort` and `--where`).")


def page_markdown(title: str, slug: str, tables: list[Table], numeric: set[str]) -> str:
    """A board page in Markdown: the plot, the main table, then one section per evaluator."""
    main, *evaluators = tables
    parts = [f"# Leaderboard: {title}\n\n"
             f"Generated by `harness leaderboard`; see [the index](../index.md) for what the columns mean. "
             f"Rows marked *reported* are published figures, not measured here. "
             f"Also as [HTML]({slug}.html) and [CSV]({slug}.csv).\n\n"
             f"![accuracy delta against FLOPs reduction: {title}]({slug}.png)\n\n" + board_table_markdown(main, numeric)]
    for table in evaluators:
        parts.append(f"\n## Evaluator: {table.evaluator}\n\n{evaluator_note(table.evaluator)}\n\n"
                     + board_table_markdown(table, numeric))
    return "".join(parts)


# ---------------------------------------------------------------- HTML
def html_page(title: str, body: str) -> str:
    """A self-contained HTML page with the board's style sheet."""
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(title)}</title>\n<style>\n{CSS}\n</style>\n</head>\n<body>\n{body}</body>\n</html>\n")


def board_table_html(table: Table, numeric: set[str], sort: str) -> str:
    """A sortable table; the column the board is sorted by carries its direction."""
    sorted_by, direction = (sort[1:], "descending") if sort.startswith("-") else (sort, "ascending")
    heads = []
    for c in table.columns:
        kind = "num" if c in numeric else "text"
        aria = f' aria-sort="{direction}"' if c == sorted_by else ""
        heads.append(f'<th data-type="{kind}" title="{html.escape(c)}"{aria}>{html.escape(header_text(c))}</th>')
    body_rows = []
    for _, row in table.rows.iterrows():
        cells = []
        for c in table.columns:
            text = html.escape(cell_text(row, c, numeric))
            if c in numeric:
                cells.append(f'<td class="num" data-value="{csv_number(row[c])}">{text}</td>')
            elif c == "source":
                label = row["source"]
                cite = "" if label == "measured" else " " + html.escape(row["citation"])
                cells.append(f'<td data-value="{text}"><span class="badge {label}">{label}</span>{cite}</td>')
            else:
                # a long note is cut to one line; the whole of it shows on hover
                cells.append(f'<td class="note" title="{text}">{text}</td>' if c == "note" else f"<td>{text}</td>")
        body_rows.append(f'<tr class="{row["source"]}">' + "".join(cells) + "</tr>")
    return (f'<div class="scroll"><table class="board">\n<thead><tr>{"".join(heads)}</tr></thead>\n<tbody>\n'
            + "\n".join(body_rows) + "\n</tbody></table></div>\n")


def page_html(title: str, slug: str, tables: list[Table], numeric: set[str], sort: str) -> str:
    """A board page in HTML: the plot, the main table, then one section per evaluator; every
    table sorts by a click on its header (the script is the package's static/board.js)."""
    main, *evaluators = tables
    group = main.rows
    measured = int((group["source"] == "measured").sum())
    body = (
        f'<p><a href="../index.html">&larr; all leaderboards</a></p>\n<h1>{html.escape(title)}</h1>\n'
        f'<p class="muted">{measured} measured row(s), {len(group) - measured} reported row(s). Measured rows are '
        f"runs of this harness (mean ± sample std over seeds); reported rows, shaded, are published figures with "
        f'their citation. See <a href="../index.html">the index</a> for what each column means. Click a column '
        f'header to sort. Also as <a href="{slug}.csv">CSV</a> and <a href="{slug}.md">Markdown</a>.</p>\n'
        f'<figure><img src="{slug}.png" alt="accuracy delta against FLOPs reduction: {html.escape(title)}">'
        f"</figure>\n" + board_table_html(main, numeric, sort)
    )
    for table in evaluators:
        name = html.escape(table.evaluator)
        note = re.sub(r"`(.+?)`", r"<code>\1</code>", html.escape(evaluator_note(table.evaluator), quote=False))
        body += (f'<h2 id="evaluator-{name}">Evaluator: {name}</h2>\n<p class="muted">{note}</p>\n'
                 + board_table_html(table, numeric, sort))
    body += f"<script>\n{SORT_SCRIPT}\n</script>\n"
    return html_page(f"Leaderboard: {title}", body)

"""The leaderboard folder: a page per (data label, model) group (Markdown, CSV, HTML, plot)
and the index linking them."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pandas as pd

from harness import records
from harness.leaderboard.plot import plot_png
from harness.leaderboard.render import html_page, markdown_cell, page_html, page_markdown, table_csv
from harness.leaderboard.runs import read_runs
from harness.leaderboard.tables import (apply_sort, apply_where, build_board, csv_columns, display_columns,
                                        numeric_columns, page_tables, read_reported)

REPORTED_FILE = "reported.csv"
TABLES_DIR = "tables"
GENERATED_SUFFIXES = (".md", ".csv", ".html", ".png")
DEFAULT_SORT = "-flops_reduction_pct"

EXPLANATION = (
    "Each page covers one data set and one model (named in its title). Data sets are told apart by their "
    "label, so CIFAR-10 read from JPEG files (\"CIFAR-10 (JPEG)\") never shares a page with the original "
    "CIFAR-10 files (\"CIFAR-10\"). A **measured** row is one configuration run with this harness: each run "
    "contributes the model it keeps (its final iteration; under `--stop-on-drop` the last one within the "
    "tolerance) against its own unpruned model (iteration 0): FLOPs and parameter reductions in %, test "
    "accuracy before (baseline) and after, their difference in points (accuracy Δ) and the wall time of all "
    "its iterations (with `--oracle-epochs`, the oracle's fine-tunes too: the note says so and gives their "
    "share of the training epochs, as the records do not time the oracle apart). Below a page's main table, one table per extra evaluator holds the numbers it reported "
    "on the kept model (`<evaluator>.<key>` in the CSV), for the rows that ran it. `options` lists the "
    "plugin options a run changed from their defaults (shown when any row of a page has one; `structures` "
    "shows when its runs differ in it); runs that differ in an option are separate rows. Runs that differ "
    "only in seed are merged: numbers are mean ± sample standard deviation, "
    "`seeds` counts the runs, and their decision paths are listed (L a layer candidate was kept, F a "
    "filter one, H heads, N neurons). Only complete runs count. A **reported** row is a published figure "
    "(`reported.csv`, with its citation and a note on what the source gives): it was not measured here, "
    "and its training budget and FLOPs counting may differ, so it is a reference point rather than a "
    "like-for-like result. Measured and reported numbers never share a row or a cell. The CSV of a page "
    "has every column, evaluators' included. In the plots, "
    "filled markers are measured (with ± bars over seeds and each run's trajectory as a faint line) and "
    "hollow markers are reported."
)
COLUMNS_NOTE = ("Columns for `harness leaderboard --sort` and `--where` (as in the CSV files, numeric ones "
                "without their `_mean`/`_std` suffix): {columns}.")


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
        numeric = set(numeric_columns(board))
        tables = page_tables(group)
        title = f"{model} on {data}"
        base = out / TABLES_DIR / slug
        files[base.with_suffix(".md")] = page_markdown(title, slug, tables, numeric).encode()
        files[base.with_suffix(".csv")] = table_csv(group, csv_columns(board, group), numeric).encode()
        files[base.with_suffix(".html")] = page_html(title, slug, tables, numeric, sort).encode()
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

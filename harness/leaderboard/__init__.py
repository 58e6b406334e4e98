"""Leaderboards built from run records and published figures.

``load_table`` gives one row per run (``harness bench`` prints it for the runs it made, with
``to_markdown``). ``write_leaderboards`` rebuilds a leaderboard folder: for each (data label,
model) group a Markdown page, a CSV, a static HTML page with sortable tables, and a plot of
accuracy against FLOPs reduction; and an index linking them. Runs of one configuration that
differ only in seed become one row (mean and sample standard deviation over the seeds).
Published figures come from ``reported.csv`` and are marked as reported in every format.

Everything written is a function of the records alone (stable order, fixed number formats,
no timestamps, PNG metadata off), so CI can rebuild the pages and compare them byte for byte.

Modules: ``runs`` (records to rows), ``tables`` (the merged board and a page's tables),
``render`` (Markdown, CSV, HTML; the style sheet and script are ``static/``), ``plot``,
``pages`` (the folder and its index).
"""

from harness.leaderboard.pages import write_leaderboards
from harness.leaderboard.plot import series_labels
from harness.leaderboard.render import html_page, to_markdown
from harness.leaderboard.runs import Run, find_runs, load_table, read_run, read_runs
from harness.leaderboard.tables import build_board, read_reported

__all__ = ["Run", "build_board", "find_runs", "html_page", "load_table", "read_reported", "read_run", "read_runs",
           "series_labels", "to_markdown", "write_leaderboards"]

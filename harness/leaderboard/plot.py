"""The plot of a board page: accuracy delta against FLOPs reduction."""

from __future__ import annotations

import io

import pandas as pd


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

"""The ``harness`` command line."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from harness import __version__
from harness.config import BUDGETS, MATCH_CHOICES, BenchConfig
from harness.errors import HarnessError


class HarnessGroup(click.Group):
    """Turns HarnessError into one line on stderr and exit status 2, without a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except HarnessError as exc:
            click.echo(f"harness: error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=HarnessGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="harness")
def main():
    """prunebench: benchmark structured pruning (layers and filters) of neural networks."""


def _progress() -> bool:
    return sys.stderr.isatty()


@main.command()
@click.option("--model", default="tiny-resnet", show_default=True, help="Model name (see `harness plugins`).")
@click.option("--dataset", default=None, help="Data set name; default: the model's own (cifar10 for CIFAR ResNets).")
@click.option("--data-dir", type=click.Path(), default=None, help="Data location, e.g. an image-folder tree with train/ and test/.")
@click.option("--checkpoint", type=click.Path(), default=None, help="State dict to start from (weights only).")
@click.option("--pretrained", is_flag=True, help="Start from the published weights (torch.hub cache, then download).")
@click.option("--method", default="cka", show_default=True, help="Pruning method.")
@click.option("--criterion", default="kl", show_default=True, help="Importance criterion.")
@click.option("--similarity", default="cka", show_default=True, help="Similarity metric.")
@click.option("--budget", type=click.Choice(list(BUDGETS)), default="quick", show_default=True,
              help="Preset for epochs and subset sizes; each value can be overridden.")
@click.option("--iterations", type=int, default=None, help="Pruning iterations (K).")
@click.option("--target-flops", type=float, default=None, help="Stop once FLOPs are reduced by this many percent.")
@click.option("--p-layer", type=int, default=1, show_default=True, help="Blocks removed by the layer candidate.")
@click.option("--match", type=click.Choice(MATCH_CHOICES), default="flops", show_default=True,
              help="What the filter candidate matches of the layer candidate's reduction.")
@click.option("--epsilon", type=float, default=0.0, show_default=True, help="Added to the filter candidate's similarity.")
@click.option("--filter-step", type=float, default=0.05, show_default=True,
              help="Share of FLOPs a filter candidate removes once no block is left.")
@click.option("--candidate-epochs", type=float, default=None, help="Fine-tuning epochs of each candidate.")
@click.option("--finetune-epochs", type=float, default=None, help="Fine-tuning epochs of the kept candidate.")
@click.option("--baseline-epochs", type=float, default=None, help="Fine-tuning epochs of given weights before pruning.")
@click.option("--scratch-epochs", type=float, default=None, help="Training epochs when no weights are given.")
@click.option("--train-subset", type=int, default=None, help="Training samples per epoch (default: the budget's).")
@click.option("--calib-size", type=int, default=None, help="Calibration samples held out of the training split.")
@click.option("--test-subset", type=int, default=None, help="Evaluate on this many test samples (fixed subset).")
@click.option("--lr", type=float, default=0.01, show_default=True, help="Fine-tuning learning rate.")
@click.option("--batch-size", type=int, default=128, show_default=True)
@click.option("--weight-decay", type=float, default=5e-4, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--runs-dir", type=click.Path(), default="runs", show_default=True, help="Where run records go.")
@click.option("--name", default=None, help="Run directory name (default: from the settings and the time).")
@click.option("--cache-dir", type=click.Path(), default=None,
              help="Cache for data and baselines (default: $HARNESS_CACHE or ~/.cache/prunebench).")
@click.option("--resume", "resume_dir", type=click.Path(), default=None,
              help="Continue a killed run from its last finished iteration (other options are ignored).")
def bench(resume_dir, **options):
    """Prune a model and record every iteration.

    With no options: the offline demo (a small ResNet trained on scikit-learn's digits).
    """
    from harness.bench import resume_bench, run_bench
    from harness.leaderboard import load_table, to_markdown

    if resume_dir:
        run_dir = resume_bench(Path(resume_dir), progress=_progress())
    else:
        run_dir = run_bench(BenchConfig(**options), progress=_progress())
    table = load_table([run_dir]).drop(columns=["run"])
    click.echo(to_markdown(table))


@main.command("plugins")
def plugins_command():
    """List every plugin: kind, name and the package it came from."""
    from harness import plugins

    rows = sorted(plugins.all_plugins(), key=lambda p: (p.kind, p.name))
    width = max(len(p.name) for p in rows) if rows else 4
    click.echo(f"{'kind':<11} {'name':<{width}} package")
    for p in rows:
        click.echo(f"{p.kind:<11} {p.name:<{width}} {p.package} {p.version}")


@main.command()
@click.option("--runs", "roots", multiple=True, type=click.Path(), default=["runs", "leaderboards/records"],
              show_default=True, help="Run directories, or folders of them (repeatable).")
@click.option("--out", type=click.Path(), default="leaderboards", show_default=True, help="Where tables go.")
def leaderboard(roots, out):
    """Rebuild the leaderboard tables (Markdown and CSV) from run records."""
    from harness.leaderboard import write_leaderboards

    written = write_leaderboards([Path(r) for r in roots], Path(out))
    if not written:
        raise HarnessError(f"no run records found under {', '.join(roots)}")
    for path in written:
        click.echo(f"wrote {path}")


if __name__ == "__main__":
    main()

"""The ``harness`` command line."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import click

from harness.cli_options import (STARTED, PluginOptionsCommand, setting_option, progress_bars, bench_options,
                                 collect_config, deadline_of, split_cores)
from harness.errors import HarnessError
from harness.kinds import BY_NAME, KINDS
from harness.settings import SEEDS, TIME_LIMIT
from harness.version import __version__

EXIT_BAD_INPUT = 2
EXIT_EVALUATOR_FAILED = 3
EXIT_RUN_STOPPED = 4
EXIT_TIME_LIMIT = 5


class HarnessGroup(click.Group):
    """Turns HarnessError into one line on stderr without a traceback: exit status 2 when
    nothing was written, 4 when a run stopped partway (its records are kept), 5 when
    --time-limit stopped it (resumable). Click's own usage errors are one line too (click
    prints three: usage, hint, error)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            hint = f" (see {exc.ctx.command_path} --help)" if exc.ctx else ""
            click.echo(f"harness: error: {exc.format_message()}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"harness: error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("harness: aborted", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)  # an int is --help's or --version's exit status

    def invoke(self, ctx):
        from harness.errors import RunsFailed, RunStopped, SystemTrouble, TimeLimitReached, os_problem, print_traceback

        try:
            return super().invoke(ctx)
        except TimeLimitReached as exc:
            click.echo(f"harness: {exc}", err=True)
            sys.exit(EXIT_TIME_LIMIT)
        except (RunStopped, RunsFailed, SystemTrouble) as exc:
            print_traceback(exc)
            click.echo(f"harness: error: {exc}", err=True)
            sys.exit(EXIT_RUN_STOPPED)
        except OSError as exc:  # the system refused partway (a full disk): what was written is kept
            print_traceback(exc)
            click.echo(f"harness: error: cannot go on: {os_problem(exc)}", err=True)
            sys.exit(EXIT_RUN_STOPPED)
        except HarnessError as exc:
            print_traceback(exc)
            click.echo(f"harness: error: {exc}", err=True)
            sys.exit(EXIT_BAD_INPUT)


@click.group(cls=HarnessGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="harness")
@click.option("--block", "blocked", multiple=True, metavar="NAME",
              help="Do not load this plugin entry point or package, or this one plugin as PACKAGE:NAME (repeatable; "
                   "also $HARNESS_BLOCK_PLUGINS, comma-separated).")
@click.option("--builtin-only", is_flag=True, default=False,
              help="Load the built-in plugins only (also $HARNESS_BUILTIN_PLUGINS_ONLY=1).")
@click.option("--traceback", "tracebacks", is_flag=True, default=False,
              help="Print the full stack of any error before its one line (also $HARNESS_TRACEBACK=1).")
@click.pass_context
def main(ctx, blocked, builtin_only, tracebacks):
    """prunebench: benchmark structured pruning (layers, filters, heads) of neural networks."""
    from harness import registry
    from harness.errors import tracebacks_shown

    ctx.meta[STARTED] = time.monotonic()  # --time-limit counts from here
    ctx.with_resource(tracebacks_shown(tracebacks))
    # this command's own plugins, with its blocking settings (pytest's Config per invocation)
    ctx.with_resource(registry.activated(registry.Registry.from_environment(blocked, builtin_only)))


@main.command(cls=PluginOptionsCommand)
@bench_options
@click.option("--config", "config_file", type=click.Path(), default=None,
              help="A TOML file with any of these options (the command line wins on conflict).")
@click.option("--resume", "resume_dir", type=click.Path(), default=None,
              help="Continue a killed run from its last finished iteration (other options but --time-limit are "
                   "ignored).")
@click.pass_context
def bench(ctx, resume_dir, config_file, seeds, time_limit, **options):
    """Prune a model and record every iteration.

    With no options: the offline demo (a small ResNet trained on scikit-learn's digits).
    Exit status: 0 done, 2 bad input, 3 finished but an evaluator failed, 4 stopped partway
    on an error (its records are kept: continue it with --resume), 5 stopped at --time-limit
    (continue with --resume).
    """
    from harness.run import resume_bench, run_bench
    from harness.configfile import config_from_options
    from harness.leaderboard import load_table, to_markdown

    if resume_dir:
        run_dirs, ok = resume_bench(Path(resume_dir), progress=progress_bars(), deadline=deadline_of(time_limit))
        run_dirs, ok = [run_dirs], ok
    else:
        merged = collect_config(ctx, dict(options, seeds=seeds, time_limit=time_limit), config_file)
        seeds, time_limit = merged.pop("seeds"), merged.pop("time_limit")
        SEEDS.check_value(seeds)
        deadline = deadline_of(time_limit)
        cfg = config_from_options(merged)
        run_dirs, ok = [], True
        for i in range(seeds):
            one = cfg.copy_for_seed(cfg.seed + i, suffix=seeds > 1)
            run_dir, run_ok = run_bench(one, progress=progress_bars(), deadline=deadline)
            run_dirs.append(run_dir)
            ok = ok and run_ok
    table = load_table(run_dirs).drop(columns=["run"])
    click.echo(to_markdown(table))
    if not ok:
        sys.exit(EXIT_EVALUATOR_FAILED)


@main.command()
@click.argument("config_file", type=click.Path())
@click.option("--out", type=click.Path(), default=None,
              help="Where the leaderboard of the sweep's own runs goes [default: RUNS_DIR/<file name>-leaderboard].")
@click.option("--dry-run", is_flag=True, help="List the runs and their state without running anything.")
@click.option("--shard", default="1/1", show_default=True,
              help="Run only share K of N (runs K, K+N, ...): N processes, one per shard, run a sweep in parallel "
                   "(for schedulers without Ray, e.g. a Slurm job array). Each takes 1/N of the cores it may use "
                   "for its torch threads unless $OMP_NUM_THREADS is set.")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
              help="Run every run as a Ray task (pip install 'prunebench[ray]'): on the cluster at ADDRESS or "
                   "$RAY_ADDRESS, else on a local Ray instance. Each run asks for the sweep file's num_cpus "
                   "(default 1) and num_gpus (default 0, fractions allowed); runs_dir must be a path every node "
                   "shares. A failed run, or one whose node died, is retried from its last record.")
@setting_option(TIME_LIMIT)
def sweep(config_file, out, dry_run, shard, ray_address, time_limit):
    """Run the product of the lists in a TOML config, one run after another.

    Axes: model, dataset, method, criterion, similarity, seed; a list under any of them is
    expanded, every other key is a `harness bench` option shared by all runs (plus
    `prefix` for the run names). Complete runs are skipped and an interrupted one is
    resumed, so a killed sweep continues where it stopped; one process at a time runs a
    shard. Ends by building the leaderboard of the sweep's own runs (no other record is read
    and no other board touched; `harness leaderboard` merges boards). Exit status: 0 done,
    2 bad input, 3 an evaluator failed, 4 a run stopped partway, 5 stopped at --time-limit
    (start the sweep again to continue).
    """
    from harness.leaderboard import write_leaderboards
    from harness.records import check_folder
    from harness.sweep import default_board, parse_shard, run_dirs, run_sweep

    shard = parse_shard(shard)
    if shard[1] > 1 and ray_address is None:
        split_cores(shard[1])
    out = Path(out) if out else default_board(config_file)
    check_folder("--out", out)
    deadline = deadline_of(time_limit)
    if deadline is not None and ray_address is not None:
        raise HarnessError("--time-limit is not supported with --ray (the runs are Ray tasks); use one without the other")
    _, ok = run_sweep(config_file, progress=progress_bars(), dry_run=dry_run, shard=shard, ray=ray_address,
                      deadline=deadline)
    if dry_run:
        return
    own = [d for d in run_dirs(config_file) if d.is_dir()]
    for path in write_leaderboards(own, out):
        click.echo(f"wrote {path}")
    if not ok:
        sys.exit(EXIT_EVALUATOR_FAILED)


@main.command()
@click.option("--model", default="resnet20", show_default=True, help="Model name (see `harness plugins`).")
@click.option("--dataset", default=None, help="Data set name [default: the model's].")
@click.option("--data-dir", type=click.Path(), default=None, help="Data location (as for harness bench).")
@click.option("--epochs", type=click.FloatRange(min=0, min_open=True), default=200, show_default=True,
              help="Training epochs over the held-in images.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Training batch size [default: 128 on a CPU, 512 on a GPU]; the learning rate is scaled with it.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=0.1, show_default=True,
              help="SGD learning rate for a batch of 128.")
@click.option("--label-smoothing", type=click.FloatRange(0, 1, max_open=True), default=0.1, show_default=True,
              help="Label smoothing of the cross-entropy.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the initial weights and data order.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--cuda-graphs", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="Capture the training step as one CUDA graph (as for harness bench).")
@click.option("--cache-dir", type=click.Path(), default=None,
              help="Cache of the decoded data set [default: $HARNESS_CACHE or ~/.cache/prunebench].")
@click.option("--out", type=click.Path(), default="weights", show_default=True,
              help="Folder of the weights file (<model>-<data set>-clean.pt) and its card (.json).")
@click.option("--time-limit", type=float, default=None,
              help="Pause (exit 5) before an epoch that would end later than this many minutes from the start, "
                   "the progress saved beside the weights; the same command continues it exactly. For GPU jobs.")
def pretrain(model, dataset, data_dir, epochs, batch_size, lr, label_smoothing, seed, device, cuda_graphs,
             cache_dir, out, time_limit):
    """Train a network from random weights on the training images no run's decisions read
    (every budget's validation and calibration split held out), and write its weights (for
    --checkpoint) with a card: SHA-256, recipe, command, validation and test accuracy.

    Its progress is saved once a minute (at an epoch boundary) in <model>-<data set>-clean.partial.pt
    beside the weights: the same command, after a kill or --time-limit, continues from there."""
    from harness.checks import default_cache_dir, resolve_device
    from harness.pretrain import pretrain as train_clean
    from harness.records import check_folder

    deadline = deadline_of(time_limit)
    if cuda_graphs == "on" and resolve_device(device).type != "cuda":
        raise HarnessError("--cuda-graphs on needs a CUDA device; valid choices here: auto, off")
    check_folder("--out", out)
    card = train_clean(model, dataset, data_dir, cache_dir or default_cache_dir(), Path(out), epochs=epochs,
                       batch_size=batch_size, lr=lr, label_smoothing=label_smoothing, seed=seed, device=device,
                       cuda_graphs=cuda_graphs, progress=progress_bars(), deadline=deadline,
                       again=shlex.join(["harness", *sys.argv[1:]]))
    accuracies = ", ".join(f"{k} {v:.2f}" for k, v in card["accuracy"].items())
    click.echo(f"wrote {Path(out) / card['file']} (sha256 {card['sha256'][:16]}...): trained on "
               f"{card['trained_on']['images']} images in {card['wall_time_s']:.0f} s; accuracy {accuracies}")


@main.command()
@click.argument("runs", nargs=-1, type=click.Path())
@click.option("--out", type=click.Path(), default="leaderboards/decisions", show_default=True,
              help="Where decisions.{md,csv,html,png} go.")
def decisions(runs, out):
    """Score every selector on every recorded decision that has an oracle (runs made with
    --oracle-epochs): agreement with the oracle, regret, exact McNemar tests and paired
    differences to linear CKA with intervals that respect clustering by run, per model and
    pooled, every decision and the contested ones; prints the answer and the smallest
    differences the decisions can detect at 80% power.

    RUNS are run directories or folders of them [default: runs leaderboards/records].
    """
    from harness.decision_pages import printed_lines, write_report
    from harness.decisions import read_decisions
    from harness.records import check_folder

    check_folder("--out", out)
    roots = [Path(r) for r in (runs or ("runs", "leaderboards/records"))]
    missing = [str(r) for r in roots if not r.exists()]
    if missing and (runs or len(missing) == len(roots)):  # by default, whichever of the two exist
        raise HarnessError(f"no such run folder: {', '.join(missing)}" + ("" if runs else "; give RUNS"))
    roots = [r for r in roots if r.exists()]
    written, scored = write_report(read_decisions(roots), Path(out))
    if not written:
        raise HarnessError(f"no decision with an oracle under {', '.join(map(str, roots))}; "
                           "record some with harness bench --oracle-epochs E")
    for line in printed_lines(scored):
        click.echo(line)
    for path in written:
        click.echo(f"wrote {path}")


@main.command("export")
@click.argument("run_dir", type=click.Path())
@click.option("--format", "fmt", default="onnx", show_default=True, metavar="onnx|pt2|torchscript",
              help="onnx (any ONNX runtime; needs pip install 'prunebench[export]'), pt2 (torch.export) or "
                   "torchscript.")
@click.option("--iteration", type=int, default=None, help="Which iteration's model [default: the model the run kept].")
@click.option("--out", type=click.Path(), default=None,
              help="The file to write [default: RUN_DIR/exported/iter_NNN.<format>].")
@click.option("--check-samples", type=click.IntRange(min=1), default=256, show_default=True,
              help="Test inputs on which the file's outputs must equal the PyTorch model's (within 1e-4, relative "
                   "to the largest output when that is above 1).")
@click.option("--factory", default=None, metavar="MODULE:CALLABLE",
              help="Runs of harness.prune: the call that makes a fresh instance of the network pruned, e.g. "
                   "'torchvision.models:resnet18(num_classes=10)' (it is checked on random inputs: such a run keeps "
                   "no data).")
def export_command(run_dir, fmt, iteration, out, check_samples, factory):
    """Write a run's pruned model as a file that runs without this project, with the data
    set's normalisation inside (raw inputs in, logits out, any batch size). The file is run
    with its own runtime on real test inputs and written only when its outputs equal the
    PyTorch model's."""
    from harness.export import export_run
    from harness.pruning import factory_from_text

    report = export_run(Path(run_dir), fmt, iteration, Path(out) if out else None, check_samples,
                        factory_from_text(factory) if factory else None)
    click.echo(f"wrote {report['path']}: {report['format']}, {report['bytes']} bytes, iteration {report['iteration']} "
               f"({report['flops'] / 1e6:.2f} MFLOPs, {report['params']} params); on {report['inputs']} "
               f"{report['inputs_from']} inputs "
               f"its outputs are within {report['max_abs_difference']:.2g} of the PyTorch model's, "
               f"{100 * report['same_prediction']:.1f}% the same class")


@main.command("check-plugin")
@click.argument("kind", type=click.Choice([kind.name for kind in KINDS]))
@click.argument("name")
@click.option("--model", "model_name", default=None, metavar="MODEL",
              help="The network to check a structure, criterion or evaluator on [default: resnet20, or for a "
                   "structure that does not prune it a model of the structure's own package]; for a model family, "
                   "the model to build (a prefix family's: timm:<name>).")
@click.option("--input-shape", default="3,32,32", show_default=True, metavar="C,H,W",
              help="One input's shape, for the network checked on (rows: F).")
@click.option("--data-dir", type=click.Path(), default=None, help="Where a data set's files are (data sets only).")
def check_plugin(kind, name, model_name, input_shape, data_dir):
    """Run the conformance kit (harness.testing) on an installed plugin: the invariants every
    plugin of its kind must keep. Exit status 0 when it conforms, 1 when it does not."""
    from harness import registry, testing

    info = registry.current().entry(kind, name)
    try:
        shape = tuple(int(part) for part in input_shape.split(","))
    except ValueError:
        raise HarnessError(f"--input-shape {input_shape!r} must be whole numbers separated by commas, "
                           "e.g. 3,32,32") from None
    check = testing.check_for(kind)
    if not BY_NAME[kind].conformance:  # a kind without a check of its own: the interface's
        problems = check(info.build())
    elif kind == "model":
        problems = check(info.build(), model_name or name, input_shape=shape)
    elif kind == "dataset":
        problems = check(info.build(), data_dir=data_dir)
    elif kind in ("structure", "criterion", "evaluator"):
        model = _model_to_check_on(info, model_name, shape)
        extra = {"input_shape": shape} if kind in ("structure", "criterion") else {}
        if kind == "criterion" and model is not None:
            extra["structures"] = testing.structures_for(model)
        problems = check(info.build(), model=model, **extra)
    else:
        problems = check(info.build())
    where = f" ({info.package} {info.version})".replace(" )", ")")
    for problem in problems:
        click.echo(f"FAIL {kind} {name}{where}: {problem}")
    if problems:
        sys.exit(1)
    click.echo(f"ok {kind} {name}{where}: conforms")


def _model_to_check_on(info, model_name: str | None, shape: tuple[int, ...]):
    """The network ``--model`` names; without it, the kit's default (None) unless a structure
    does not prune that one and its own package has a model family whose network it prunes."""
    from harness import registry, testing

    if model_name:
        return testing.model_named(model_name, input_shape=shape)
    if info.kind != "structure" or info.obj.supports(testing.model_named("resnet20")):
        return None
    for family in registry.current().of_kind("model").values():
        if family.package == info.package and not family.name.endswith(":"):
            model = testing.model_named(family.name, input_shape=shape)
            if info.obj.supports(model):
                return model
    return None


@main.command("plugins")
def plugins_command():
    """List every plugin: kind, the name that chooses it and the package (and version) it came
    from. A plugin whose name another plugin of its kind has too is listed as PACKAGE:NAME."""
    from harness import registry

    current = registry.current()
    rows = sorted(((kind.name, chosen, p) for kind in KINDS for chosen, p in current.of_kind(kind.name).items()),
                  key=lambda r: (r[0], r[1]))
    width = max(len(chosen) for _, chosen, _ in rows) if rows else 4
    click.echo(f"{'kind':<11} {'name':<{width}} package")
    for kind, chosen, p in rows:
        kind_of = getattr(p.obj, "type", "") if kind == "structure" else ""
        extra = f"  (type {kind_of})" if kind_of else ""
        click.echo(f"{kind:<11} {chosen:<{width}} {p.package} {p.version}{extra}")


@main.command()
@click.option("--runs", "roots", multiple=True, type=click.Path(), default=["runs", "leaderboards/records"],
              show_default=True, help="Run directories, or folders of them (repeatable).")
@click.option("--out", type=click.Path(), default="leaderboards", show_default=True,
              help="Where the pages go (published figures are read from OUT/reported.csv).")
@click.option("--sort", default=None, help="Column to rank by; a leading '-' sorts descending "
              "[default: -flops_reduction_pct].")
@click.option("--where", multiple=True, help="Keep rows matching COLUMN OP VALUE (=, !=, <, <=, >, >=), "
              "e.g. method=cka or flops_reduction_pct>=50; repeatable, all must hold.")
def leaderboard(roots, out, sort, where):
    """Rebuild the leaderboards from run records: per data set and model a Markdown table,
    a CSV, a sortable HTML page and an accuracy-versus-FLOPs plot, and an index."""
    from harness.leaderboard import write_leaderboards
    from harness.records import check_folder

    check_folder("--out", out)
    written = write_leaderboards([Path(r) for r in roots], Path(out), sort=sort, where=list(where) or None)
    if not written:
        raise HarnessError(f"no run records found under {', '.join(roots)}")
    for path in written:
        click.echo(f"wrote {path}")


if __name__ == "__main__":
    main()

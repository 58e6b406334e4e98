"""The ``harness`` command line."""

from __future__ import annotations

import sys
import weakref
from pathlib import Path

import click

from harness.errors import HarnessError
from harness.kinds import BY_NAME, KINDS
from harness.settings import BENCH_SETTINGS, SEEDS, Setting
from harness.version import __version__

EXIT_BAD_INPUT = 2
EXIT_EVALUATOR_FAILED = 3
EXIT_RUN_STOPPED = 4


class HarnessGroup(click.Group):
    """Turns HarnessError into one line on stderr without a traceback: exit status 2 when
    nothing was written, 4 when a run stopped partway (its records are kept). Click's own
    usage errors are one line too (click prints three: usage, hint, error)."""

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
        from harness.errors import RunsFailed, RunStopped

        try:
            return super().invoke(ctx)
        except (RunStopped, RunsFailed) as exc:
            click.echo(f"harness: error: {exc}", err=True)
            sys.exit(EXIT_RUN_STOPPED)
        except HarnessError as exc:
            click.echo(f"harness: error: {exc}", err=True)
            sys.exit(EXIT_BAD_INPUT)


class PluginOptionsCommand(click.Command):
    """A command that also takes the options the invocation's plugins declare
    (harness.api.Option), loaded only when the command runs or shows its help."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._plugin_params = weakref.WeakKeyDictionary()  # registry -> its options as click options

    def get_params(self, ctx):
        from harness import registry

        current = registry.current()
        if current not in self._plugin_params:
            self._plugin_params[current] = [
                click.Option([opt.flag], default=None, help=f"{opt.help} [default: {_show(opt.default)}]")
                for opt in current.all_options().values()]
        params = super().get_params(ctx)  # the command's own, then its help option
        return params[:len(self.params)] + self._plugin_params[current] + params[len(self.params):]


def _show(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(_show(v) for v in value)
    return str(value)


@click.group(cls=HarnessGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="harness")
@click.option("--block", "blocked", multiple=True, metavar="NAME",
              help="Do not load this plugin entry point or package (repeatable; also $HARNESS_BLOCK_PLUGINS, "
                   "comma-separated).")
@click.option("--builtin-only", is_flag=True, default=False,
              help="Load the built-in plugins only (also $HARNESS_BUILTIN_PLUGINS_ONLY=1).")
@click.pass_context
def main(ctx, blocked, builtin_only):
    """prunebench: benchmark structured pruning (layers, filters, heads) of neural networks."""
    from harness import registry

    # this command's own plugins, with its blocking settings (pytest's Config per invocation)
    ctx.with_resource(registry.activated(registry.Registry.from_environment(blocked, builtin_only)))


def _progress() -> bool:
    return sys.stderr.isatty()


def bench_options(f):
    """The options of `harness bench`: one per setting of harness.settings."""
    for setting in reversed(BENCH_SETTINGS.values()):
        f = _click_option(setting)(f)
    return f


def _click_option(setting: Setting):
    """The command-line option of a setting."""
    if setting.type is bool:
        flags = f"{setting.flag}/--no-{setting.flag[2:]}" if setting.default else setting.flag
        return click.option(flags, is_flag=True, default=setting.default, show_default=setting.default,
                            help=setting.help_text())
    kind = (click.Choice(setting.choices) if setting.choices else click.Path() if setting.path else
            {int: click.INT, float: click.FLOAT}.get(setting.type, click.STRING))
    default = None if setting.type is list else setting.default  # a list is comma-separated text there
    return click.option(setting.flag, type=kind, default=default, show_default=default is not None,
                        help=setting.help_text())


def collect_config(ctx: click.Context, options: dict, config_file: str | None) -> dict:
    """Options from a config file, overridden by those given on the command line."""
    from harness.configfile import file_value, read_toml

    from_file = read_toml(config_file) if config_file else {}
    merged = {}
    for key, value in options.items():
        given = ctx.get_parameter_source(key) not in (click.core.ParameterSource.DEFAULT, None)
        in_file = from_file.pop(key, None)
        if in_file is not None and not given:
            value = file_value(key, in_file, config_file)
        merged[key] = value
    return merged | from_file  # keys the command line does not know stay, to be reported


@main.command(cls=PluginOptionsCommand)
@bench_options
@click.option("--config", "config_file", type=click.Path(), default=None,
              help="A TOML file with any of these options (the command line wins on conflict).")
@click.option("--resume", "resume_dir", type=click.Path(), default=None,
              help="Continue a killed run from its last finished iteration (other options are ignored).")
@click.pass_context
def bench(ctx, resume_dir, config_file, seeds, **options):
    """Prune a model and record every iteration.

    With no options: the offline demo (a small ResNet trained on scikit-learn's digits).
    Exit status: 0 done, 2 bad input, 3 finished but an evaluator failed, 4 stopped partway
    (its records are kept: continue it with --resume).
    """
    from harness.run import resume_bench, run_bench
    from harness.configfile import config_from_options
    from harness.leaderboard import load_table, to_markdown

    if resume_dir:
        run_dirs, ok = resume_bench(Path(resume_dir), progress=_progress())
        run_dirs, ok = [run_dirs], ok
    else:
        merged = collect_config(ctx, dict(options, seeds=seeds), config_file)
        seeds = merged.pop("seeds")
        SEEDS.check_value(seeds)
        cfg = config_from_options(merged)
        run_dirs, ok = [], True
        for i in range(seeds):
            one = cfg.copy_for_seed(cfg.seed + i, suffix=seeds > 1)
            run_dir, run_ok = run_bench(one, progress=_progress())
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
                   "(for schedulers without Ray, e.g. a Slurm job array).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
              help="Run every run as a Ray task (pip install 'prunebench[ray]'): on the cluster at ADDRESS or "
                   "$RAY_ADDRESS, else on a local Ray instance. Each run asks for the sweep file's num_cpus "
                   "(default 1) and num_gpus (default 0, fractions allowed); runs_dir must be a path every node "
                   "shares. A failed run, or one whose node died, is retried from its last record.")
def sweep(config_file, out, dry_run, shard, ray_address):
    """Run the product of the lists in a TOML config, one run after another.

    Axes: model, dataset, method, criterion, similarity, seed; a list under any of them is
    expanded, every other key is a `harness bench` option shared by all runs (plus
    `prefix` for the run names). Complete runs are skipped and an interrupted one is
    resumed, so a killed sweep continues where it stopped; one process at a time runs a
    shard. Ends by building the leaderboard of the sweep's own runs (no other record is read
    and no other board touched; `harness leaderboard` merges boards). Exit status: 0 done,
    2 bad input, 3 an evaluator failed, 4 a run stopped partway.
    """
    from harness.leaderboard import write_leaderboards
    from harness.records import check_folder
    from harness.sweep import default_board, parse_shard, run_dirs, run_sweep

    shard = parse_shard(shard)
    out = Path(out) if out else default_board(config_file)
    check_folder("--out", out)
    _, ok = run_sweep(config_file, progress=_progress(), dry_run=dry_run, shard=shard, ray=ray_address)
    if dry_run:
        return
    own = [d for d in run_dirs(config_file) if d.is_dir()]
    for path in write_leaderboards(own, out):
        click.echo(f"wrote {path}")
    if not ok:
        sys.exit(EXIT_EVALUATOR_FAILED)


@main.command()
@click.argument("runs", nargs=-1, type=click.Path())
@click.option("--out", type=click.Path(), default="leaderboards/decisions", show_default=True,
              help="Where decisions.{md,csv,html,png} go.")
def decisions(runs, out):
    """Score every selector on every recorded decision that has an oracle (runs made with
    --oracle-epochs): agreement with the oracle, regret, and paired differences to linear CKA.

    RUNS are run directories or folders of them [default: runs leaderboards/records].
    """
    from harness.decisions import write_decisions
    from harness.records import check_folder

    check_folder("--out", out)
    roots = [Path(r) for r in (runs or ("runs", "leaderboards/records"))]
    missing = [str(r) for r in roots if not r.exists()]
    if missing:
        raise HarnessError(f"no such run folder: {', '.join(missing)}")
    written = write_decisions(roots, Path(out))
    if not written:
        raise HarnessError(f"no decision with an oracle under {', '.join(map(str, roots))}; "
                           "record some with harness bench --oracle-epochs E")
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
@click.argument("kind", type=click.Choice([kind.name for kind in KINDS if kind.conformance]))
@click.argument("name")
def check_plugin(kind, name):
    """Run the conformance kit (harness.testing) on an installed plugin: the invariants every
    plugin of its kind must keep. Exit status 0 when it conforms, 1 when it does not."""
    from harness import registry, testing

    problems = getattr(testing, BY_NAME[kind].conformance)(registry.build(kind, name))
    info = registry.info(kind, name)
    where = f" ({info.package} {info.version})" if info else ""
    for problem in problems:
        click.echo(f"FAIL {kind} {name}{where}: {problem}")
    if problems:
        sys.exit(1)
    click.echo(f"ok {kind} {name}{where}: conforms")


@main.command("plugins")
def plugins_command():
    """List every plugin: kind, name and the package (and version) it came from."""
    from harness import registry

    rows = sorted(registry.all_plugins(), key=lambda p: (p.kind, p.name))
    width = max(len(p.name) for p in rows) if rows else 4
    click.echo(f"{'kind':<11} {'name':<{width}} package")
    for p in rows:
        kind_of = getattr(p.obj, "type", "") if p.kind == "structure" else ""
        extra = f"  (type {kind_of})" if kind_of else ""
        click.echo(f"{p.kind:<11} {p.name:<{width}} {p.package} {p.version}{extra}")


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

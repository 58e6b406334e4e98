"""What the `harness` commands share: settings as click options (`harness bench`'s, plugin
options included), a config file merged under the command line, the start of the command
(for --time-limit) and the cores a sweep shard may use."""

from __future__ import annotations

import sys
import weakref

import click

from harness.settings import BENCH_SETTINGS, TIME_LIMIT, Setting

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
                click.Option([opt.flag], type=_click_type(opt), default=None,
                             help=f"{opt.help} [default: {_show(opt.default)}]")
                for opt in current.all_options().values()]
        params = super().get_params(ctx)  # the command's own, then its help option
        return params[:len(self.params)] + self._plugin_params[current] + params[len(self.params):]


def _click_type(opt) -> click.ParamType:
    """A plugin option's type on the command line (``--help`` shows it): its ``parse`` when that
    is ``int`` or ``float``, else text, which the plugin's own ``parse`` reads."""
    return {int: click.INT, float: click.FLOAT}.get(opt.parse, click.STRING)


def _show(value) -> str:
    if isinstance(value, bool):  # a yes-or-no option's default as it is typed
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ",".join(_show(v) for v in value)
    return str(value)


def progress_bars() -> bool:
    return sys.stderr.isatty()


STARTED = "harness.started"  # click context meta key: when the command started (time.monotonic())


def split_cores(processes: int) -> None:
    """Shards of one sweep on one machine each take their share of its cores: OpenMP pools
    sized for the whole machine, one per process, oversubscribe it (the KL loop took 146 s
    instead of 9 s with two torch processes on 2 cores). $OMP_NUM_THREADS, when set, decides."""
    import os

    import torch

    if "OMP_NUM_THREADS" in os.environ:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, cores // processes))
    click.echo(f"{torch.get_num_threads()} torch thread(s): {cores} core(s) shared by {processes} shards "
               "(set OMP_NUM_THREADS to choose)", err=True)


def deadline_of(minutes: float | None) -> float | None:
    """--time-limit as a time.monotonic() deadline from the command's start, after checking
    the value."""
    TIME_LIMIT.check_type(minutes)
    TIME_LIMIT.check_value(minutes)
    return None if minutes is None else click.get_current_context().meta[STARTED] + 60.0 * minutes


def bench_options(f):
    """The options of `harness bench`: one per setting of harness.settings."""
    for setting in reversed(BENCH_SETTINGS.values()):
        f = setting_option(setting)(f)
    return f


def setting_option(setting: Setting):
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

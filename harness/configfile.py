"""Experiment configs: TOML files with the options of `harness bench`, turned into a
:class:`harness.config.BenchConfig` together with the command line."""

from __future__ import annotations

from pathlib import Path

from harness.config import BenchConfig
from harness.errors import HarnessError
from harness.settings import BENCH_SETTINGS, RUN_SETTINGS

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


def read_toml(path: str | Path) -> dict:
    """The file's keys with dashes turned into underscores (``stop-on-drop`` = ``stop_on_drop``)."""
    path = Path(path)
    if path.is_dir():
        raise HarnessError(f"config file {path} is a folder; give the TOML file inside it")
    if not path.is_file():
        raise HarnessError(f"config file {path} does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise HarnessError(f"config file {path} is not valid TOML ({exc})") from None
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def file_value(name: str, value, source: str):
    """A config file's value of the option ``name``, as the command line would have it: a
    setting's checked and converted by its declaration (harness.settings), a plugin option's
    as text, which its plugin parses as it parses the command line's."""
    if name in BENCH_SETTINGS:
        return BENCH_SETTINGS[name].from_file(value, source)
    return ",".join(str(v) for v in value) if isinstance(value, list) else str(value)


def config_from_options(options: dict) -> BenchConfig:
    """A BenchConfig from option values by name; names that are not run settings are plugin
    options (checked against the plugins' declarations when the run is resolved)."""
    run_settings = {s.name: s for s in RUN_SETTINGS}
    values, plugin_options = {}, {}
    for key, value in options.items():
        if value is None:
            continue
        if key in run_settings:
            values[key] = _split(value) if run_settings[key].type is list else value
        else:
            plugin_options[key] = value
    return BenchConfig(**values, options=plugin_options)


def _split(value):
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value)

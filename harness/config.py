"""The configuration of a bench run: the run settings (harness.settings) and the plugin
options it was given. Frozen: a run's configuration is resolved once
(:func:`harness.resolve.resolve`) and never changes after."""

from __future__ import annotations

import dataclasses
from dataclasses import field

from harness.deprecation import warn_deprecated
from harness.errors import HarnessError
from harness.settings import BENCH_SETTINGS, BUDGETS, NOT_RECORDED, RUN_SETTINGS, with_run_settings


@with_run_settings
class BenchConfig:
    """The settings of one run (harness.settings.RUN_SETTINGS, each a field with its
    default) and the plugin options it was given."""

    options: dict = field(default_factory=dict)  # plugin options (harness.api.Option), by name

    def checked(self) -> BenchConfig:
        """Every setting checked (its type, then its value), with the budget's values for the
        settings it decides; the validation split's size, which depends on the data set's,
        is decided when the data loads."""
        for setting in RUN_SETTINGS:
            setting.check_type(getattr(self, setting.name))
        BENCH_SETTINGS["budget"].check_value(self.budget)  # the preset is read before the other checks
        from_budget = {key: value for key, value in BUDGETS[self.budget].items()
                       if getattr(self, key) is None and key != "val_size"}
        cfg = dataclasses.replace(self, options=dict(self.options), evaluators=list(self.evaluators), **from_budget)
        for setting in RUN_SETTINGS:
            setting.check_value(getattr(cfg, setting.name))
        # 15 from a TOML file and 15.0 from the command line are one run (one cached baseline)
        cfg = dataclasses.replace(cfg, **{s.name: float(getattr(cfg, s.name)) for s in RUN_SETTINGS
                                          if s.type is float and isinstance(getattr(cfg, s.name), int)})
        if cfg.oracle_epochs > 0 and not cfg.record_decisions:
            raise HarnessError("--oracle-epochs needs the decision records; drop --no-record-decisions")
        if 0 < cfg.oracle_epochs < cfg.finetune_epochs:
            raise HarnessError(f"--oracle-epochs {cfg.oracle_epochs:g} must be 0 (off) or at least --finetune-epochs "
                               f"{cfg.finetune_epochs:g}: the oracle judges over at least the kept model's horizon")
        return cfg

    def resolved(self) -> BenchConfig:
        warn_deprecated("BenchConfig.resolved()", "BenchConfig.checked(), or harness.resolve.resolve(cfg) for the "
                                                  "whole resolution step", stacklevel=3)
        return self.checked()

    def copy_for_seed(self, seed: int, suffix: bool) -> BenchConfig:
        """The same run with another seed; with ``suffix``, a given name gets ``-s<seed>``."""
        name = f"{self.name}-s{seed}" if suffix and self.name else self.name
        return dataclasses.replace(self, seed=seed, name=name)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> BenchConfig:
        """From a stored config; keys of older record versions are mapped or dropped, and a
        setting an older record lacks has the value runs had before it existed."""
        d = dict(d)
        if "extra" in d and "options" not in d:  # schema 1
            d["options"] = d.pop("extra")
        for setting in RUN_SETTINGS:
            if setting.old_records is not NOT_RECORDED:
                d.setdefault(setting.name, setting.old_records)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

"""The resolved configuration of a bench run."""

from __future__ import annotations

import dataclasses
from dataclasses import field

from harness.errors import HarnessError
from harness.settings import BENCH_SETTINGS, BUDGETS, RUN_SETTINGS, with_run_settings


@with_run_settings
class BenchConfig:
    """The settings of one run (harness.settings.RUN_SETTINGS, each a field with its
    default) and the plugin options it was given."""

    options: dict = field(default_factory=dict)  # plugin options (harness.api.Option), by name

    def resolved(self) -> "BenchConfig":
        """Fill budget-dependent values from the preset and check every setting."""
        for setting in RUN_SETTINGS:
            setting.check_type(getattr(self, setting.name))
        BENCH_SETTINGS["budget"].check_value(self.budget)  # the preset is read before the other checks
        cfg = dataclasses.replace(self, options=dict(self.options), evaluators=list(self.evaluators))
        for key, value in BUDGETS[self.budget].items():
            # the validation split's default depends on the data set's size: set when it loads
            if getattr(cfg, key) is None and key != "val_size":
                setattr(cfg, key, value)
        for setting in RUN_SETTINGS:
            setting.check_value(getattr(cfg, setting.name))
            if setting.type is float and isinstance(getattr(cfg, setting.name), int):
                # 15 from a TOML file and 15.0 from the command line are one run (one cached baseline)
                setattr(cfg, setting.name, float(getattr(cfg, setting.name)))
        if cfg.oracle_epochs > 0 and not cfg.record_decisions:
            raise HarnessError("--oracle-epochs needs the decision records; drop --no-record-decisions")
        return cfg

    def copy_for_seed(self, seed: int, suffix: bool) -> "BenchConfig":
        """The same run with another seed; with ``suffix``, a given name gets ``-s<seed>``."""
        name = f"{self.name}-s{seed}" if suffix and self.name else self.name
        return dataclasses.replace(self, seed=seed, name=name)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "BenchConfig":
        """From a stored config; keys of older record versions are mapped or dropped."""
        d = dict(d)
        if "extra" in d and "options" not in d:  # schema 1
            d["options"] = d.pop("extra")
        # records from before the training engine trained in fp32 at batch 128
        d.setdefault("precision", "fp32")
        d.setdefault("batch_size", 128)
        d.setdefault("distill", 0.0)
        # records from before the validation split decided on the test split and described
        # only the method's own candidates
        d.setdefault("val_size", 0)
        d.setdefault("record_decisions", False)
        d.setdefault("round_to", 1)  # records from before --round-to kept any channel count
        d.setdefault("cuda_graphs", "off")  # records from before --cuda-graphs trained eagerly
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

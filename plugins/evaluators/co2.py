"""Energy and emissions measured by codecarbon's offline tracker (no network): around the
phases of the run (baseline training, criterion scoring, candidate fine-tuning, fine-tuning
the kept model) and around a fixed inference workload, so the GreenAI claim (a pruned
model emits less at inference) is measured on the same workload in the same run."""

from __future__ import annotations

import contextlib
import logging

import torch

from harness.api import Evaluator, Option
from harness.api import normalize

PHASES = ("baseline", "criterion", "candidates", "finetune")


def check_country(code: str) -> str | None:
    """None when codecarbon knows the grid of this ISO 3166 alpha-3 code (offline mode),
    else the problem with a few valid codes."""
    try:
        from codecarbon.input import DataSource

        known = sorted(DataSource().get_global_energy_mix_data())
    except Exception:  # codecarbon missing or changed: the evaluator says so when it runs
        return None if len(code) == 3 and code.isalpha() else "must be a 3-letter ISO code"
    if code in known:
        return None
    return f"codecarbon has no grid data for it; valid choices: {len(known)} ISO 3166 alpha-3 codes such as " \
           f"{', '.join(c for c in ('USA', 'FRA', 'DEU', 'GBR', 'CHN', 'IND', 'BRA') if c in known)}"


class CO2(Evaluator):
    """codecarbon estimates power from the hardware it finds (RAPL counters, or the CPU's
    TDP scaled by its load when counters cannot be read, and GPU power through NVML) and
    turns energy into emissions with the carbon intensity of ``--country``. Phase figures
    are the work done since the previous evaluation; the inference figure is the fixed
    workload (``--co2-inference-images`` test images, batch 256) on this model."""

    name = "co2"
    description = "energy (kWh) and emissions (kg CO2eq) per phase and of a fixed inference workload (codecarbon)"
    options = (
        Option("country", "USA", "ISO 3166 alpha-3 country code whose grid carbon intensity codecarbon uses "
               "(offline mode).", check=check_country),
        Option("co2_inference_images", 5000, "Images in the fixed inference workload of the co2 evaluator.",
               parse=int, check=lambda n: None if n >= 1 else "must be at least 1"),
    )

    def __init__(self):
        self._tracker = None
        self._country = None
        self._since_last: dict[str, dict] = {}

    def configure(self, options):
        self._country = options["country"]

    def _running_tracker(self):
        if self._tracker is None:
            from codecarbon import OfflineEmissionsTracker

            logging.getLogger("codecarbon").setLevel(logging.ERROR)
            self._tracker = OfflineEmissionsTracker(country_iso_code=self._country or "USA", output_methods=[],
                                                    log_level="error", measure_power_secs=5)
            self._tracker.start()
        return self._tracker

    def _measure(self, task: str):
        """Context manager yielding a dict filled with the task's figures on exit."""
        figures = {}

        @contextlib.contextmanager
        def run():
            tracker = self._running_tracker()
            tracker.start_task(task)
            try:
                yield figures
            finally:
                data = tracker.stop_task()
                figures.update(energy_kwh=float(data.energy_consumed), emissions_kg=float(data.emissions),
                               duration_s=float(data.duration))

        return run()

    @contextlib.contextmanager
    def track(self, phase):
        with self._measure(phase) as figures:
            yield
        total = self._since_last.setdefault(phase, {"energy_kwh": 0.0, "emissions_kg": 0.0, "duration_s": 0.0})
        for key, value in figures.items():
            total[key] += value

    @torch.inference_mode()
    def evaluate(self, model, ctx):
        model.eval()
        images = ctx.data.test.images
        n = ctx.options["co2_inference_images"]
        with self._measure("inference") as figures:
            done = 0
            while done < n:  # cycle through the test split until the workload is done
                for i in range(0, len(images), 256):
                    x = images[i:i + min(256, n - done)]
                    model(normalize(x.to(ctx.device), ctx.data.mean, ctx.data.std))
                    done += len(x)
                    if done >= n:
                        break
        phases, self._since_last = self._since_last, {}
        out = {"inference_energy_kwh": figures["energy_kwh"], "inference_emissions_kg": figures["emissions_kg"],
               "inference_duration_s": round(figures["duration_s"], 4), "inference_images": n,
               "phase_energy_kwh": sum(p["energy_kwh"] for p in phases.values()),
               "phase_emissions_kg": sum(p["emissions_kg"] for p in phases.values()),
               "phases": phases, "country": self._country}
        if ctx.baseline:
            base = ctx.baseline["inference_energy_kwh"]
            out["inference_energy_reduction_pct"] = round(100 * (1 - figures["energy_kwh"] / base), 4) if base else None
        return out

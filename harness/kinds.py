"""The plugin kinds, in one table: the hook that registers each, the interface its objects
follow, the setting that names a run's plugins of that kind, and the conformance check of
``harness check-plugin``. The hooks (:mod:`harness.hookspecs`), registration, the plugin
set of a run, the name checks of a run's configuration, ``harness plugins``/``check-plugin``
and the documentation test all read it, so a new kind is a row here, an interface in
:mod:`harness.api`, a section in docs/plugins.md and the code that uses it; `harness
check-plugin` checks its plugins against the interface (``harness.testing.check_interface``)
until the row names a check of its own (``conformance``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    name: str  # what errors and `harness plugins` call one: "criterion"
    plural: str  # what a run calls its plugins of this kind (RunPlugins.criteria); the hook is register_<plural>
    interface: str  # the class of harness.api that declares every member (by name: this table loads no torch)
    # the run setting that names the run's plugin of this kind (a str setting) or lists them
    # (a list setting); None: the setting names something else (structure types)
    setting: str | None = None
    # a run uses every registered plugin of this kind: always (True) or when this run setting is on
    every: bool | str = False
    conformance: str | None = None  # the harness.testing check of `harness check-plugin`
    description: str = ""  # what one is: the docstring of its hook

    @property
    def hook(self) -> str:
        return f"register_{self.plural}"


KINDS: tuple[Kind, ...] = (
    Kind("model", "models", "ModelFamily", setting="model", conformance="check_model_family",
         description="networks created by name (``resnet20``), rebuilt from an architecture spec, with optional "
                     "pretrained weights."),
    Kind("dataset", "datasets", "Dataset", setting="dataset", conformance="check_dataset",
         description="loaders for train, calibration and test splits, with the normalisation the models expect."),
    Kind("structure", "structures", "Structure", every=True, conformance="check_structure",
         description="a kind of prunable unit (a residual block, a filter) that can be listed, ablated temporarily "
                     "and removed for good."),
    Kind("method", "methods", "Method", setting="method", conformance="check_method",
         description="the decision rule of one pruning iteration (which candidates to build and which to keep)."),
    Kind("criterion", "criteria", "Criterion", setting="criterion", conformance="check_criterion",
         description="importance scores for units of a structure; lower means less important, comparable across "
                     "layers."),
    # the run's metric decides; every metric describes the candidates in the decision records
    Kind("similarity", "similarities", "Similarity", setting="similarity", every="record_decisions",
         conformance="check_similarity",
         description="a representation similarity, higher meaning more similar, used to compare a candidate with "
                     "its parent."),
    Kind("evaluator", "evaluators", "Evaluator", setting="evaluators", conformance="check_evaluator",
         description="measurements taken on the unpruned model and on the model after each iteration."),
)

BY_NAME: dict[str, Kind] = {kind.name: kind for kind in KINDS}


def kind_named(name: str) -> Kind:
    if name not in BY_NAME:
        raise ValueError(f"unknown plugin kind {name!r}; valid choices: {', '.join(BY_NAME)}")
    return BY_NAME[name]

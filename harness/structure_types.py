"""Units and structure types (the kinds of unit: layer, filter, head, neuron, or a plugin's
own): their tie-break order, the letters decisions are recorded with, and which structure
prunes each type on a model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from harness.errors import HarnessError, warn


@dataclass(frozen=True)
class Unit:
    """One prunable unit: ``site`` is a module path, ``index`` a channel or head (None:
    the whole site, e.g. a residual block)."""

    structure: str
    site: str
    index: int | None = None

    @property
    def key(self) -> str:
        return self.site if self.index is None else f"{self.site}:{self.index}"


# tie-break order of structure types: the paper gives a tie to the layer candidate
TYPE_ORDER = ("layer", "filter", "head", "neuron")

# how decisions are recorded (iterations.jsonl "decision", decision paths like "LFF")
DECISION_LETTERS = {"layer": "L", "filter": "F", "head": "H", "neuron": "N"}


def structure_type(structure) -> str:
    """The type a structure prunes; a structure object that declares none is its own type."""
    return getattr(structure, "type", structure.name)


def structure_types(names: Iterable[str]) -> list[str]:
    return sorted(set(names), key=lambda t: (TYPE_ORDER.index(t) if t in TYPE_ORDER else len(TYPE_ORDER), t))


def decision_letter(type_: str, structures: Iterable) -> str:
    """A built-in type's letter, else the one a structure of that type declares (``letter``),
    else the type's first letter, upper case."""
    if type_ in DECISION_LETTERS:
        return DECISION_LETTERS[type_]
    declared = [getattr(st, "letter", None) for st in structures if structure_type(st) == type_]
    return next((letter for letter in declared if letter), type_[0].upper())


def check_decision_letters(types: Iterable[str], structures: Iterable) -> None:
    """Two structure types of one run must not share a letter: the decision path would lie."""
    structures = list(structures)
    seen: dict[str, str] = {}
    for t in types:
        letter = decision_letter(t, structures)
        if letter in seen:
            raise HarnessError(f"structure types {seen[letter]} and {t} would both be recorded as {letter!r}; "
                               f"give the structure of type {t} a letter of its own (Structure.letter)")
        seen[letter] = t


_WARNED: set = set()  # ties already reported in this process: once is enough


def choose_structures(structures: Iterable, types: Iterable[str], model, named: dict[str, str],
                      own: Iterable[str] = ()) -> dict:
    """For each type, the structure that prunes it on this model, whatever order the plugins
    were discovered in: the one the model family names, else the highest ``priority`` among
    those that support the model, of those the ones ``own`` names (the model family's own
    package's); a tie left is a warning naming both, and the first by name wins."""
    structures, own = list(structures), set(own)
    found = {}
    for t in types:
        offered = [st for st in structures if structure_type(st) == t]
        if t in named:
            chosen = [st for st in offered if st.name == named[t] and st.supports(model)]
        else:
            def rank(st):
                return -getattr(st, "priority", 0), st.name not in own

            chosen = sorted((st for st in offered if st.supports(model)), key=lambda st: (*rank(st), st.name))
            tied = [st.name for st in chosen if rank(st) == rank(chosen[0])]
            if len(tied) > 1 and (t, *tied) not in _WARNED:
                _WARNED.add((t, *tied))
                warn(f"structures {', '.join(tied)} all claim type {t!r} on this model with the same priority; "
                     f"using {tied[0]} (a model family can name its own in structure_names, a structure can "
                     "declare a priority)")
        if chosen:
            found[t] = chosen[0]
    return found

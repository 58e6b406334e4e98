"""Issue 15: names that say what things are."""

import warnings

import pytest
from torch import nn

from harness import registry, session
from harness.api import Candidate, Structure
from harness.errors import HarnessError
from harness.structure_types import check_decision_letters, decision_letter


class _Leaf(Structure):
    name, type = "leaf-structure", "leaf"


class _Gate(Structure):
    name, type, letter = "gate-structure", "logit-gate", "G"


@pytest.fixture
def structures():
    return [*registry.registry("structure").values(), _Leaf(), _Gate()]


def test_decision_letters_never_collide(structures):
    """Letters were type[0].upper(): a new type "leaf" would have been recorded as L, like a layer."""
    assert [decision_letter(t, structures) for t in ("layer", "filter", "head", "neuron")] == ["L", "F", "H", "N"]
    assert decision_letter("leaf", structures) == "L" and decision_letter("logit-gate", structures) == "G"
    check_decision_letters(["layer", "filter", "logit-gate"], structures)
    with pytest.raises(HarnessError, match="structure types layer and leaf would both be recorded as 'L'"):
        check_decision_letters(["layer", "leaf"], structures)


def test_candidate_type_and_its_old_name():
    c = Candidate("filter", [], nn.Identity())
    assert c.type == "filter"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert c.structure == "filter"
    assert caught and issubclass(caught[0].category, DeprecationWarning)


def test_measure_refuses_an_unknown_word():
    """measure() counted filters for any word it did not know ("flop" would have been filters)."""
    s = session.Session.__new__(session.Session)
    with pytest.raises(ValueError, match="unknown measure 'flop'"):
        s.measure(nn.Conv2d(1, 2, 3), "flop")


@pytest.mark.slow
def test_fused_attention_is_counted_without_any_plugin_imported():
    """The CPU's fused attention kernel was counted only once the timm plugin had been imported."""
    import subprocess
    import sys

    code = """
import sys, torch
from torch import nn
import torch.nn.functional as F
from harness.measure import count_flops

class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return F.scaled_dot_product_attention(x, x, x) * self.scale

assert not any(m.startswith("harness_plugins") for m in sys.modules)
print(count_flops(Attention(), (1, 16, 8)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == 2 * (2 * 16 * 16 * 8)  # q @ k^T and attn @ v, 2 FLOPs per multiply-add

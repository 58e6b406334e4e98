"""Weights files: weights-only state dicts read safely, published weights through torch.hub's
cache, and a state dict loaded into a network with one line naming what does not match."""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from harness.errors import HarnessError, first_line


def load_state(model: nn.Module, state: dict, source: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[1:3]) if len(first) > 1 else first[0]
        raise HarnessError(f"checkpoint {source} does not match model {model.arch['model']}: {detail[:300]}") from None


def load_error(exc: Exception) -> str:
    """What went wrong in torch.load, without its advice to load untrusted files with
    ``weights_only=False`` (the unpickler's own complaint is the useful part)."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        detail = next((line.strip() for line in text.split("WeightsUnpickler error:", 1)[1].splitlines()
                       if line.strip()), "")
        return f"the weights-only unpickler refused it: {detail}"
    if text.startswith("Weights only load failed"):  # the reason is the paragraph after torch's advice
        paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
        reason = next((p for p in paragraphs[1:] if not p.startswith("Check the documentation")), "")
        return f"the weights-only unpickler refused it: {' '.join(reason.split())[:300]}"
    return first_line(exc)


def read_checkpoint(path: str) -> dict:
    if os.path.isdir(path):
        raise HarnessError(f"checkpoint {path} is a directory; give the weights file inside it")
    if not os.path.isfile(path):
        raise HarnessError(f"checkpoint {path} does not exist")
    try:
        with warnings.catch_warnings():  # torch's pickle-protocol notice would be a second line
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise HarnessError(f"checkpoint {path} is corrupt or not a weights-only state dict "
                           f"({load_error(exc)})") from None
    if not isinstance(state, dict):
        raise HarnessError(f"checkpoint {path} holds a {type(state).__name__}, not a state dict")
    return state


def check_finite(state: dict, path: str) -> None:
    """Weights holding NaN or infinite values train and score nothing (such a checkpoint ran to
    10% accuracy without a word): one line naming the first such tensor."""
    bad = [name for name, t in checkpoint_tensors(state).items()
           if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise HarnessError(f"checkpoint {path} holds NaN or infinite values in {len(bad)} tensor(s), {bad[0]} first: "
                           "give weights a run can start from")


def load_url_state_dict(url: str) -> dict:
    """Published weights through torch.hub's cache: a file already in
    ``$TORCH_HOME/hub/checkpoints/`` is used without any network; its name's hash is checked."""
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", check_hash=True,
                                                  weights_only=True, progress=False)
    except Exception as exc:
        cache = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
        raise HarnessError(f"cannot get pretrained weights {url} ({first_line(exc, 160)}); "
                           f"put the file at {cache}") from None


def checkpoint_tensors(state: dict, prefix: str = "") -> dict:
    """A checkpoint's tensors (inside a ``state_dict`` or ``model`` entry when there is one,
    without DataParallel's ``module.``), each key under ``prefix`` (a wrapper's ``net.``), with
    the checkpoint's metadata (see :func:`renamed`)."""
    for wrapper in ("state_dict", "model"):
        if isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break

    def key(name: str) -> str:
        name = name.removeprefix("module.")
        return name if name.startswith(prefix) else prefix + name

    return renamed(state, key)


def renamed(state: dict, key=lambda name: name, value=lambda tensor: tensor) -> dict:
    """``state`` with its keys renamed by ``key`` and its tensors mapped by ``value``, keeping
    its ``_metadata``, the version of each module's state-dict layout, with module paths
    renamed alike: some modules read it when they load (MNASNet refuses a state dict without
    it), and a state dict rebuilt key by key loses it."""
    out = OrderedDict((key(name), value(tensor)) for name, tensor in state.items())
    metadata = getattr(state, "_metadata", None)
    if metadata is not None:
        # a module path "a.b" is a key prefix "a.b.": renamed as a key, then without its dot
        out._metadata = OrderedDict((key(f"{path}." if path else "").removesuffix("."), dict(meta))
                                    for path, meta in metadata.items())
    return out

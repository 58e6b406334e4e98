"""What the model families share about their blocks: finding the block that holds a unit,
dropping blocks from a staged architecture spec, reading and fitting checkpoints."""

from __future__ import annotations

import copy
from collections import OrderedDict


def block_index(blocks: list[tuple[str, object]], site: str) -> int:
    """The position in ``blocks`` (``[(site, block)]`` in forward order) of the block that
    holds ``site``: the block itself or a module inside it."""
    for i, (name, _) in enumerate(blocks):
        if site == name or site.startswith(name + "."):
            return i
    raise KeyError(site)


def staged_arch_without_blocks(arch: dict, sites) -> tuple[dict, dict[str, str]]:
    """A ResNet spec (``arch["stages"][s]["blocks"]``, modules ``layer<s+1>.<i>``) without the
    blocks at ``sites``, and the rename map (new module prefix -> old one) of
    :func:`harness.surgery.rebuild`: the blocks after a removed one move up."""
    out, rename = copy.deepcopy(arch), {}
    for s, stage in enumerate(arch["stages"], start=1):
        kept = [i for i in range(len(stage["blocks"])) if f"layer{s}.{i}" not in sites]
        out["stages"][s - 1]["blocks"] = [stage["blocks"][i] for i in kept]
        rename.update({f"layer{s}.{j}.": f"layer{s}.{i}." for j, i in enumerate(kept) if i != j})
    return out, rename


def listed_arch_without_blocks(model, sites, prefix: str) -> tuple[dict, dict[str, str]]:
    """A transformer spec (``arch["blocks"]``, one entry per block, modules ``<prefix><i>``)
    without the blocks at ``sites``, and the rename map of :func:`harness.surgery.rebuild`."""
    from harness.surgery import renumber

    old = [site for site, _ in model.blocks()]
    kept = [i for i, site in enumerate(old) if site not in sites]
    arch = copy.deepcopy(model.arch)
    arch["blocks"] = [model.arch["blocks"][i] for i in kept]
    return arch, renumber(old, [old[i] for i in kept], [f"{prefix}{j}" for j in range(len(kept))])


def arch_with_block_sizes(model, key: str, sizes: dict[str, int]) -> dict:
    """A transformer spec with ``arch["blocks"][i][key]`` set for the blocks at the given sites."""
    arch = copy.deepcopy(model.arch)
    index = {site: i for i, (site, _) in enumerate(model.blocks())}
    for site, size in sizes.items():
        arch["blocks"][index[site]][key] = size
    return arch


def fit_shapes(state: dict, fresh: dict) -> tuple[dict, list[str]]:
    """Published weights fitted to a model's fresh state dict: each tensor whose shape differs
    here (a classifier for other classes, another stem) keeps its fresh initialisation.
    Returns the fitted state and the keys that stayed fresh."""
    fitted = OrderedDict((key, state[key] if key in state and state[key].shape == t.shape else t)
                         for key, t in fresh.items())
    # the published layout's versions (MNASNet reads them when it loads)
    fitted._metadata = getattr(state, "_metadata", getattr(fresh, "_metadata", None))
    return fitted, [key for key, t in fresh.items() if fitted[key] is t]

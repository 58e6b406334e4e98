"""The zoo (issue 24): every torchvision classifier up to 12 GFLOPs at 224x224 and a set of timm
networks, pruned by Torch-Pruning alone and by the harness, side by side, as a new user would:
random weights, noise images, 10 classes.

- Torch-Pruning alone: ``MagnitudeImportance``, pruning ratio 0.2, the classifiers ignored
  (every layer with one output per class), one step, then a forward pass in eval mode (the table
  notes where a forward pass in train mode fails).
- The harness: ``harness.prune(model, ..., budget="smoke", iterations=1, criterion="l1")``;
  the pruned model reloaded through ``harness.load_pruned`` on a fresh instance (outputs
  identical), exported to ONNX with ``harness.export_pruned`` (onnxruntime's outputs within
  1e-4); the blocks offered to the depth candidate are counted.

Each library and model runs in a process of its own with a timeout (``--timeout``); ``--jobs``
runs that many at once (time them with ``--jobs 1`` on an idle machine). Results go to
``benchmarks/results/zoo.csv`` and ``zoo.md``, which say why each failure fails.

    python benchmarks/zoo.py                                       # the whole zoo
    python benchmarks/zoo.py --models torchvision:resnet18,timm:ghostnet_100 --out /tmp/zoo
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_GFLOPS = 12.0  # torchvision's own count at 224x224; the larger ones take too long on a 2-core CPU
TIMM = ["timm:resnet18", "timm:regnetx_002", "timm:ghostnet_100", "timm:mobilenetv3_small_100",
        "timm:efficientnet_b0", "timm:convnext_atto", "timm:mobilevit_xxs", "timm:mobilenetv4_conv_small",
        "timm:dla34", "timm:vit_tiny_patch16_224", "timm:deit_tiny_patch16_224",
        "timm:swin_tiny_patch4_window7_224", "timm:mixnet_s"]
# the smallest input some networks take (Inception-v3's stem needs 75 pixels), and their own
# constructor arguments: Inception-v3's auxiliary classifier runs (in train mode) on 299 pixels
# only, so it goes (`--traced-kwargs aux_logits=False` on the command line)
MIN_SIZE = {"torchvision:inception_v3": 96, "torchvision:maxvit_t": 224}  # MaxViT: 7x7 windows at every stage
KWARGS = {"torchvision:inception_v3": {"aux_logits": False, "init_weights": True}}
# networks with residual blocks whose shortcut is the identity, by architecture (a ViT's are
# its encoder blocks): the harness must offer them to the depth candidate
IDENTITY_RESIDUALS = ("resnet", "resnext", "wide_resnet", "regnet", "mobilenet_v2", "mobilenet_v3", "mobilenetv3",
                      "mnasnet", "efficientnet", "convnext", "ghostnet", "vit_", "deit_", "swin", "maxvit",
                      "mobilevit", "mobilenetv4", "dla", "mixnet")
CLASSES = 10
TRAIN, VAL = 256, 64
PRUNE = dict(budget="smoke", iterations=1, criterion="l1", calib_size=64, batch_size=32)


def torchvision_names(max_gflops: float = MAX_GFLOPS) -> list[str]:
    import torchvision
    from torchvision.models import get_model_weights, list_models

    return [f"torchvision:{n}" for n in list_models(module=torchvision.models)
            if get_model_weights(n).DEFAULT.meta["_ops"] <= max_gflops]


def make(name: str, size: int):
    """A fresh network with random weights for ``CLASSES`` classes and ``size`` x ``size`` images."""
    import torch

    source, variant = name.split(":", 1)
    torch.manual_seed(0)
    if source == "timm":
        import timm

        try:  # transformers are built for one image size
            return timm.create_model(variant, num_classes=CLASSES, img_size=size)
        except TypeError:
            return timm.create_model(variant, num_classes=CLASSES)
    import torchvision

    kwargs = dict(KWARGS.get(name, {}))
    if variant.startswith("vit_"):  # built for one image size
        kwargs["image_size"] = size
    elif variant.startswith("maxvit"):
        kwargs["input_size"] = (size, size)
    return torchvision.models.get_model(variant, num_classes=CLASSES, **kwargs)


def size_of(name: str, size: int) -> int:
    return max(size, MIN_SIZE.get(name, 0))


def has_identity_residuals(name: str) -> bool:
    return any(name.split(":", 1)[1].startswith(prefix) for prefix in IDENTITY_RESIDUALS)


def why(exc: BaseException) -> str:
    """One line: the exception and the function it came from."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (in {frames[-1].name}, {Path(frames[-1].filename).name})" if frames else ""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, MemoryError) or "Cannot allocate memory" in text or "can't allocate memory" in text:
        text = f"out of the {os.environ.get('ZOO_MEMORY_GB', '?')} GB this process may use ({text[:120]})"
    return f"{type(exc).__name__}: {text[:300]}{where}"


def classifiers(model, x) -> list:
    """Every layer whose outputs are one per class (the classifier, auxiliary classifiers)."""
    from torch import nn

    return [m for m in model.modules() if (isinstance(m, nn.Linear) and m.out_features == CLASSES)
            or (isinstance(m, nn.Conv2d) and m.out_channels == CLASSES)]


def run_torch_pruning(name: str, size: int) -> dict:
    import torch
    import torch_pruning as tp

    model = make(name, size).eval()
    x = torch.randn(2, 3, size, size)
    before = sum(p.numel() for p in model.parameters())
    pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.MagnitudeImportance(),
                                  pruning_ratio=0.2, ignored_layers=classifiers(model, x))
    pruner.step()
    out = {"tp_params_kept": round(sum(p.numel() for p in model.parameters()) / before, 4)}
    with torch.no_grad():
        model.eval()(x)
        try:
            model.train()(x)
        except Exception as exc:  # noqa: BLE001 - pruned, but it cannot be trained
            out["why"] = f"pruned, but its train-mode forward fails: {why(exc)}"
    return out


def run_harness(name: str, size: int, workdir: Path) -> dict:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    import harness
    from harness import records, registry

    g = torch.Generator().manual_seed(0)
    x = torch.randn(TRAIN + VAL, 3, size, size, generator=g)
    y = torch.randint(0, CLASSES, (TRAIN + VAL,), generator=g)
    train = DataLoader(TensorDataset(x[:TRAIN], y[:TRAIN]), batch_size=64)
    val = DataLoader(TensorDataset(x[TRAIN:], y[TRAIN:]), batch_size=64)
    out = {}
    t0 = time.perf_counter()
    result = harness.prune(make(name, size), train, val, runs_dir=workdir, name="run", **PRUNE)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    rows = records.read_iterations(result.run_dir)
    out |= {"family": result.family, "path": result.decision_path, "iteration_s": rows[1]["wall_time_s"],
            "flops_reduction_pct": round(result.flops_reduction_pct, 2),
            "depth_offered": any(c["type"] == "layer" for c in rows[1]["candidates"])}
    # the blocks the depth candidate chose from, on the unpruned network
    unpruned = harness.pruning.load_own_model(records.model_path(result.run_dir, 0), lambda: make(name, size))
    layer = next(st for st in registry.registry("structure").values()
                 if getattr(st, "type", "") == "layer" and st.supports(unpruned))
    out["blocks"] = len(layer.units(unpruned))
    again = harness.load_pruned(result.run_dir, lambda: make(name, size))
    probe = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out["reload_identical"] = bool(torch.equal(again(probe), result.model.eval()(probe)))
    report = harness.export_pruned(result.run_dir, lambda: make(name, size), "onnx", samples=16)
    # relative to the largest output when that is above 1, as the export's check reads it (random
    # weights give Inception-v3 logits of 1e9)
    out["onnx_max_diff"] = float(f"{report['max_abs_difference'] / max(1.0, report['max_output']):.3g}")
    return out


def one(name: str, part: str, size: int, result_file: Path) -> None:
    """A child process: one library on one model; what it has found so far is in ``result_file``."""
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    out = {"stage": "started"}
    result_file.write_text(json.dumps(out))
    try:
        if part == "tp":
            out |= run_torch_pruning(name, size) | {"ok": True}
        else:
            work = tempfile.mkdtemp(prefix="zoo-")
            out |= run_harness(name, size, Path(work)) | {"ok": True}
    except BaseException as exc:  # noqa: BLE001 - every failure is a row of the table
        out |= {"ok": False, "why": why(exc)}
    result_file.write_text(json.dumps(out))
    if part != "tp":
        shutil.rmtree(work, ignore_errors=True)


def run_child(name: str, part: str, size: int, timeout: float, memory: int) -> dict:
    """One library on one model in a process of its own, at most ``timeout`` seconds and ``memory``
    bytes of address space (Torch-Pruning's grouping of Swin grows past 15 GB)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        path = Path(f.name)
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), ZOO_MEMORY_GB=f"{memory / 2 ** 30:g}",
               MKL_NUM_THREADS=os.environ.get("MKL_NUM_THREADS", "1"), PYTHONWARNINGS="ignore")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, __file__, "--one", name, "--part", part, "--size", str(size),
                               "--result", str(path)], capture_output=True, text=True, timeout=timeout, env=env,
                              preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (memory, memory)))
        out = json.loads(path.read_text() or "{}")
        if "ok" not in out:
            lines = (proc.stderr or "").strip().splitlines()
            out |= {"ok": False, "why": f"the process ended with status {proc.returncode}: "
                                        f"{lines[-1][:200] if lines else 'no output'}"}
    except subprocess.TimeoutExpired:
        out = {"ok": False, "why": f"timeout: more than {timeout:.0f} s"}
    finally:
        path.unlink(missing_ok=True)
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    return out


COLUMNS = ["model", "size", "identity_residuals", "tp_ok", "tp_why", "harness_ok", "family", "iteration_s", "seconds",
           "path", "flops_reduction_pct", "blocks", "depth_offered", "reload_identical", "onnx_max_diff",
           "harness_why"]


def row(name: str, size: int, tp: dict, mine: dict) -> dict:
    return {"model": name, "size": size, "identity_residuals": has_identity_residuals(name), "tp_ok": tp.get("ok"),
            "tp_why": tp.get("why", ""), "harness_ok": mine.get("ok"), "family": mine.get("family", ""),
            "iteration_s": mine.get("iteration_s", ""), "seconds": mine.get("seconds", ""),
            "path": mine.get("path", ""), "flops_reduction_pct": mine.get("flops_reduction_pct", ""),
            "blocks": mine.get("blocks", ""), "depth_offered": mine.get("depth_offered", ""),
            "reload_identical": mine.get("reload_identical", ""), "onnx_max_diff": mine.get("onnx_max_diff", ""),
            "harness_why": mine.get("why", "")}


def yes(value) -> str:
    return {True: "yes", False: "no"}.get(value, "")


def intro(rows: list[dict], args, shared: str, seconds: float) -> str:
    """The table's opening paragraph: the command, how long it took and the settings."""
    return (f"`python benchmarks/zoo.py --jobs {args.jobs} --timeout {args.timeout:g} --size {args.size}` "
            f"({len(rows)} networks, {seconds / 60:.0f} min; {shared}). Random weights, noise images of "
            f"{args.size}x{args.size} (Inception-v3: 96x96, without its auxiliary classifier, which needs 299x299), {CLASSES} classes, {TRAIN} training and {VAL} "
            f"validation images; the harness: `harness.prune(..., {', '.join(f'{k}={v!r}' for k, v in PRUNE.items())})`; "
            "Torch-Pruning: MagnitudeImportance, pruning ratio 0.2, classifiers ignored, one step and a forward pass "
            "in eval mode (and one in train mode, noted where it fails). One process per library and model, one "
            "thread each.")


def read_rows(path: Path) -> list[dict]:
    """The rows of a zoo.csv, typed as :func:`row` makes them (booleans, the size; the rest as written)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r.update({k: {"True": True, "False": False}.get(v, v) for k, v in r.items()})
        r["size"] = int(r["size"])
    return rows


def markdown(rows: list[dict], args, opening: str) -> str:
    tp_ok = [r for r in rows if r["tp_ok"]]
    ok = [r for r in rows if r["harness_ok"]]
    both = [r for r in tp_ok if r["harness_ok"]]
    residual = [r for r in rows if r["identity_residuals"] and r["harness_ok"]]
    timed = sorted((r for r in ok if r["iteration_s"] != ""), key=lambda r: -float(r["iteration_s"]))
    lines = [
        "# The zoo: Torch-Pruning alone and the harness, side by side",
        "",
        opening,
        "",
        f"- Torch-Pruning alone prunes **{len(tp_ok)} of {len(rows)}**; the harness **{len(ok)} of {len(rows)}**, "
        f"**{len(both)} of the {len(tp_ok)}** Torch-Pruning prunes.",
        f"- Reloaded through `harness.load_pruned` with identical outputs: {sum(r['reload_identical'] is True for r in ok)} "
        f"of {len(ok)}; exported to ONNX and run in onnxruntime within 1e-4: "
        f"{sum(r['onnx_max_diff'] != '' for r in ok)} of {len(ok)}.",
        f"- A depth candidate (blocks offered) on {sum(r['depth_offered'] is True for r in ok)} of {len(ok)}; on "
        f"{sum(r['depth_offered'] is True for r in residual)} of the {len(residual)} pruned networks with identity "
        "residual blocks.",
        "- Slowest smoke iterations: " + ", ".join(f"{r['model']} {float(r['iteration_s']):.0f} s" for r in timed[:5])
        + "." if timed else "",
        "",
        "| model | Torch-Pruning | harness | family | s / iteration | s in all | path | FLOPs -% | blocks | "
        "reload | ONNX diff (relative) | why it fails |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        because = "; ".join(w for w in (f"Torch-Pruning: {r['tp_why']}" if r["tp_why"] else "",
                                        f"harness: {r['harness_why']}" if r["harness_why"] else "") if w)
        blocks = f"{r['blocks']}" if r["blocks"] != "" else ""
        if r["identity_residuals"]:
            blocks += " (residual)"
        size = "" if r["size"] == args.size else f" ({r['size']} px)"
        size += "".join(f", {k}={v}" for k, v in KWARGS.get(r["model"], {}).items() if k != "init_weights")
        lines.append(f"| {r['model']}{size} | {yes(r['tp_ok'])} | "
                     f"{yes(r['harness_ok'])} | {r['family']} | {r['iteration_s']} | {r['seconds']} | {r['path']} | "
                     f"{r['flops_reduction_pct']} | {blocks} | {yes(r['reload_identical'])} | {r['onnx_max_diff']} | "
                     f"{because.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=None, help="comma-separated names [default: the whole zoo]")
    parser.add_argument("--jobs", type=int, default=1, help="processes at once [default: 1]")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per library and model [default: 300]")
    parser.add_argument("--size", type=int, default=64, help="image size [default: 64]")
    parser.add_argument("--memory-gb", type=float, default=12, help="address space per process [default: 12]")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="where zoo.csv and zoo.md go")
    parser.add_argument("--shared", default="the machine was shared with other jobs",
                        help="how the machine was used, for the table's heading")
    parser.add_argument("--max-gflops", type=float, default=MAX_GFLOPS,
                        help="the largest torchvision classifier taken, in torchvision's GFLOPs at 224x224 "
                             f"[default: {MAX_GFLOPS:g}]")
    parser.add_argument("--merge", action="store_true",
                        help="replace only these --models' rows of the zoo.csv and zoo.md already in --out")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return one(args.one, args.part, args.size, Path(args.result))
    names = args.models.split(",") if args.models else torchvision_names(args.max_gflops) + TIMM
    tasks = [(name, part) for name in names for part in ("tp", "harness")]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        done = dict(zip(tasks, pool.map(lambda t: run_child(t[0], t[1], size_of(t[0], args.size), args.timeout,
                                                            int(args.memory_gb * 2 ** 30)), tasks)))
    rows = [row(name, size_of(name, args.size), done[(name, "tp")], done[(name, "harness")]) for name in names]
    minutes = (time.perf_counter() - t0) / 60
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.merge:  # these rows replace theirs in the committed table, which says when and how
        fresh = {r["model"]: r for r in rows}
        old = read_rows(out / "zoo.csv")
        rows = [fresh.pop(r["model"], r) for r in old] + list(fresh.values())
        opening = next(line for line in (out / "zoo.md").read_text().splitlines() if line.startswith("`python"))
        opening += (f" Re-run on {time.strftime('%Y-%m-%d')} with `--merge --models {args.models} --size {args.size}` "
                    f"({minutes:.0f} min; {args.shared}): those rows are from that code.")
    else:
        opening = intro(rows, args, args.shared, minutes * 60)
    with open(out / "zoo.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    (out / "zoo.md").write_text(markdown(rows, args, opening))
    print((out / "zoo.md").read_text())


if __name__ == "__main__":
    main()

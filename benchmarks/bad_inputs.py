"""Replays the bad inputs of issue 16 ("Reliability") against the installed `harness` and
prints, for each: exit status, lines on stderr, whether a traceback was shown and whether
anything was written (a file created or changed anywhere in the case's scratch folder, the
data and baseline caches included). Ends with the count of inputs that exit 2 with one
line and write nothing.

    python benchmarks/bad_inputs.py [--shared ../shared]

Each case runs in a fresh folder with its own runs folder and cache. Cases marked
"silent" were accepted with a wrong result; they are checked for the right outcome
instead (the expected behaviour is in the case's note).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--budget", "smoke", "--iterations", "1", "--calib-size", "8", "--val-size", "10", "--train-subset", "64",
         "--scratch-epochs", "0.1"]


def harness(args, cwd, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "HARNESS_CACHE": str(Path(cwd) / "cache"), **(env or {})}, timeout=timeout)


def snapshot(folder: Path) -> dict:
    out = {}
    for path in folder.rglob("*"):
        st = path.stat()
        out[str(path.relative_to(folder))] = (st.st_size, st.st_mtime_ns) if path.is_file() else "folder"
    return out


def tiny_cifar(shared: Path, out: Path, per_class=(12, 4)) -> Path:
    """An image-folder tree with a few CIFAR-10 (JPEG) images per class."""
    for split, n in zip(("train", "test"), per_class):
        counts = {}
        with tarfile.open(shared / "data" / "cifar10-jpeg" / f"{split}.tar.gz") as tar:
            for member in tar:
                parts = Path(member.name).parts
                if not member.isfile() or len(parts) < 3 or counts.get(parts[-2], 0) >= n:
                    continue
                counts[parts[-2]] = counts.get(parts[-2], 0) + 1
                target = out / split / parts[-2] / parts[-1]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(member).read())
    return out


class Case:
    def __init__(self, label, args, setup=None, note="", check=None, env=None, names=None):
        self.label, self.args, self.setup, self.note, self.check, self.env = label, args, setup, note, check, env
        self.names = names  # the message must name this (the bad file, the real problem)


def cases(shared: Path):
    ckpt = shared / "models" / "cifar-resnet"
    first_ckpt = sorted(ckpt.glob("*20*"))[0]

    def data(d):
        return tiny_cifar(shared, d / "cifar")

    def empty_classes(d):
        for split in ("train", "test"):
            for cls in ("a", "b"):
                (d / "cifar" / split / cls).mkdir(parents=True)

    def corrupt_jpeg(d):
        root = data(d)
        victim = sorted((root / "train" / "cat").iterdir())[3]
        victim.write_bytes(victim.read_bytes()[:100])

    def other_size(d):
        from PIL import Image

        root = data(d)
        Image.new("RGB", (40, 40)).save(root / "train" / "dog" / "big.jpg")

    def text_jpeg(d):
        root = data(d)
        (root / "test" / "ship" / "notes.jpg").write_text("not an image\n")

    def toml(text):
        return lambda d: (d / "exp.toml").write_text(text)

    def run_then(mutate):
        def setup(d):
            r = harness(["bench", "--name", "r", "--iterations", "1", "--budget", "smoke"], d)
            assert r.returncode == 0, r.stderr
            mutate(d / "runs" / "r")
        return setup

    def truncate_last(run):
        p = run / "iterations.jsonl"
        text = p.read_text()
        p.write_text(text[:-20])
        (run / "result.json").unlink()

    def config_invalid(run):
        (run / "config.json").write_text("{not json")
        (run / "result.json").unlink()

    def config_list(run):
        (run / "config.json").write_text("[1, 2]")
        (run / "result.json").unlink()

    def empty_line(run):
        with open(run / "iterations.jsonl", "a") as f:
            f.write("{}\n")
        (run / "result.json").unlink()

    def a_file(name):
        return lambda d: (d / name).write_text("a file\n")

    def train_only(d):
        root = data(d)
        shutil.rmtree(root / "test")

    def pickle_ckpt(d):
        import torch

        class Evil:
            def __reduce__(self):
                return (os.system, ("echo pwned > pwned.txt",))

        torch.save({"state_dict": Evil()}, d / "evil.pt")

    def truncated_ckpt(d):
        data(d)
        (d / "trunc.pt").write_bytes(first_ckpt.read_bytes()[:5000])

    def a_dir(d):
        (d / "ckdir").mkdir()

    def corrupt_record(d):
        for name in ("a", "b"):
            r = harness(["bench", "--name", name, "--iterations", "1", "--budget", "smoke"], d)
            assert r.returncode == 0, r.stderr
        (d / "runs" / "b" / "iterations.jsonl").write_text("garbage\n{}\n")

    def out_file(d):
        r = harness(["bench", "--name", "a", "--iterations", "1", "--budget", "smoke"], d)
        assert r.returncode == 0, r.stderr
        (d / "board").write_text("mine\n")

    def sweep(text):
        return toml(text)

    def refused_archive(d):
        (d / "arch").mkdir()
        for split in ("train", "test"):
            with tarfile.open(d / "arch" / f"{split}.tar.gz", "w:gz") as tar:
                info = tarfile.TarInfo("../escape.txt")
                info.size = 2
                import io
                tar.addfile(info, io.BytesIO(b"x\n"))

    return [
        # tracebacks
        Case("class folders all empty", ["bench", "--model", "resnet20", "--data-dir", "cifar", *SMALL], empty_classes, names="no images"),
        Case("corrupt JPEG", ["bench", "--model", "resnet20", "--data-dir", "cifar", *SMALL], corrupt_jpeg, names="train/cat/"),
        Case("image of another size", ["bench", "--model", "resnet20", "--data-dir", "cifar", *SMALL], other_size, names="train/dog/big.jpg"),
        Case("text file named .jpg", ["bench", "--model", "resnet20", "--data-dir", "cifar", *SMALL], text_jpeg, names="test/ship/notes.jpg"),
        Case("--scratch-epochs inf", ["bench", "--scratch-epochs", "inf"]),
        Case("--baseline-epochs inf", ["bench", "--baseline-epochs", "inf"]),
        Case("--candidate-epochs inf", ["bench", "--candidate-epochs", "inf"]),
        Case("tiny-resnet with breast-cancer", ["bench", "--dataset", "breast-cancer", "--budget", "smoke"]),
        Case("TOML iterations = [1, 2]", ["bench", "--config", "exp.toml"], toml("iterations = [1, 2]\n")),
        Case("TOML lr = [0.1]", ["bench", "--config", "exp.toml"], toml("lr = [0.1]\n")),
        Case("TOML iterations = inf", ["bench", "--config", "exp.toml"], toml("iterations = inf\n")),
        Case("TOML batch_size = 1e400", ["bench", "--config", "exp.toml"], toml("batch_size = 1e400\n")),
        Case("--resume, last line truncated", ["bench", "--resume", "runs/r"], run_then(truncate_last),
             note="repaired: a warning, then the run continues (exit 0)", check="repair"),
        Case("--resume, config.json not JSON", ["bench", "--resume", "runs/r"], run_then(config_invalid), check="run"),
        Case("--resume, config.json a list", ["bench", "--resume", "runs/r"], run_then(config_list), check="run"),
        Case("--resume, an empty {} line", ["bench", "--resume", "runs/r"], run_then(empty_line), check="run"),
        Case("--runs-dir is a file", ["bench", "--runs-dir", "afile"], a_file("afile")),
        Case("--cache-dir is a file", ["bench", "--cache-dir", "afile"], a_file("afile")),
        Case("HARNESS_CACHE is a file", ["bench"], a_file("afile"), env={"HARNESS_CACHE": "afile"}),
        Case("runs folder under a file", ["bench", "--runs-dir", "afile/runs"], a_file("afile")),
        Case("leaderboard, one record corrupt", ["leaderboard", "--runs", "runs", "--out", "board"], corrupt_record,
             note="a warning naming it, the other runs' board written (exit 0)", check="skip"),
        Case("leaderboard --out an existing file", ["leaderboard", "--runs", "runs", "--out", "board"], out_file),
        # accepted, wrongly
        Case("--lr inf", ["bench", "--lr", "inf"]),
        Case("--epsilon nan", ["bench", "--epsilon", "nan"]),
        Case("TOML iterations = 2.5", ["bench", "--config", "exp.toml"], toml("iterations = 2.5\n")),
        Case("TOML iterations = true", ["bench", "--config", "exp.toml"], toml("iterations = true\n")),
        Case("--country ZZZ", ["bench", "--evaluators", "co2", "--country", "ZZZ"]),
        Case("sweep epsilon = nan --dry-run", ["sweep", "exp.toml", "--dry-run"],
             sweep('method = ["cka"]\nepsilon = nan\n')),
        Case("sweep lr = inf --dry-run", ["sweep", "exp.toml", "--dry-run"], sweep('method = ["cka"]\nlr = inf\n')),
        # writes outside the runs folder
        Case("--name ../x", ["bench", "--name", "../x"]),
        Case("--name /abs/path", ["bench", "--name", "/tmp/prunebench-abs-name"]),
        Case("config name = '../x'", ["bench", "--config", "exp.toml"], toml('name = "../x"\n')),
        Case("sweep prefix = '../../x-'", ["sweep", "exp.toml"], sweep('method = ["cka"]\nprefix = "../../x-"\n')),
        # errors naming the wrong problem
        Case("--model timm:nosuch_vit", ["bench", "--model", "timm:nosuch_vit"], names="nosuch_vit"),
        Case("--model torchvision:nosuch", ["bench", "--model", "torchvision:nosuch"], names="nosuch"),
        Case("train-only folder", ["bench", "--model", "resnet20", "--data-dir", "cifar", *SMALL], train_only, names="test"),
        Case("a directory as --checkpoint", ["bench", "--model", "resnet20", "--checkpoint", "ckdir"], a_dir, names="directory"),
        Case("malicious pickle --checkpoint", ["bench", "--model", "resnet20", "--checkpoint", "evil.pt"], pickle_ckpt, names="posix.system"),
        # checked too late
        Case("truncated checkpoint", ["bench", "--model", "resnet20", "--checkpoint", "trunc.pt", "--data-dir", "cifar",
                                      *SMALL], truncated_ckpt),
        # smaller
        Case("click usage error", ["bench", "--iterations", "x"]),
        Case("refused archive leaves .train-<pid>/", ["bench", "--model", "resnet20", "--data-dir", "arch", *SMALL],
             refused_archive),
    ]


def judge(case: Case, r, before: dict, after: dict, folder: Path) -> dict:
    changed = sorted(k for k in after if before.get(k) != after[k])
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    traceback = "Traceback" in r.stderr
    if case.check == "repair":
        good = r.returncode == 0 and any("cut short" in line for line in lines)
    elif case.check == "skip":
        good = r.returncode == 0 and any("warning" in line for line in lines) and not traceback
    elif case.check == "run":  # the run's own records stay as they were
        good = r.returncode == 2 and len(lines) == 1 and not [c for c in changed if not c.startswith("cache")]
    else:
        good = r.returncode == 2 and len(lines) == 1 and not changed and not traceback
    if case.names and not any(case.names in line for line in lines):
        good = False
    pwned = (folder / "pwned.txt").exists()
    return {"exit": r.returncode, "stderr_lines": len(lines), "traceback": traceback, "written": changed[:3],
            "good": good and not pwned, "first": (lines[-1] if lines else "")[:150]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(ROOT.parent / "shared"))
    parser.add_argument("--only", default=None, help="run only cases whose label contains this")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()
    shared = Path(args.shared)
    results = []
    for case in cases(shared):
        if args.only and args.only not in case.label:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            if case.setup:
                case.setup(folder)
            before = snapshot(folder)
            start = time.perf_counter()
            try:
                r = harness(case.args, folder, env=case.env, timeout=180)
            except subprocess.TimeoutExpired as exc:  # accepted and still running: an impossible number ran
                r = subprocess.CompletedProcess(exc.cmd, "timeout", "", "timed out after 180 s")
            seconds = time.perf_counter() - start
            row = judge(case, r, before, snapshot(folder), folder) | {"case": case.label, "seconds": round(seconds, 1)}
            for outside in (Path("/tmp/prunebench-abs-name"), folder.parent / "x", folder.parent.parent / "x-cka"):
                if outside.exists():
                    row["good"] = False
                    row["written"] = [str(outside), *row["written"]]
                    shutil.rmtree(outside, ignore_errors=True)
        results.append(row)
        mark = "ok " if row["good"] else "BAD"
        print(f"{mark} {row['case']:<38} exit {row['exit']} lines {row['stderr_lines']} "
              f"{'traceback ' if row['traceback'] else ''}{'wrote ' + ','.join(row['written']) if row['written'] else ''}"
              f" {row['seconds']}s | {row['first']}", flush=True)
    good = sum(r["good"] for r in results)
    print(f"\n{good} of {len(results)} inputs handled: one line and exit 2 with nothing written "
          "(or, where noted, the repair or skip the issue asks for)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

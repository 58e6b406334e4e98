"""A cold load of CIFAR-10 kept as train.tar.gz and test.tar.gz (as ../shared has them): the
archives unpacked to disk and the folder tree decoded (what the loader did before), against
the images decoded straight from the archives (what it does now), in the same run, and the
two checked equal.

    python benchmarks/data_load.py --data-dir ../shared/data/cifar10-jpeg
"""

from __future__ import annotations

import argparse
import tarfile
import tempfile
import time
from pathlib import Path

from harness_plugins.datasets import SPLITS, decode_images, read_image_archive, read_image_folder


def unpacked_then_decoded(root: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        for split in SPLITS:
            with tarfile.open(root / f"{split}.tar.gz") as tar:
                tar.extractall(tmp, filter="data")
        return {split: read_image_folder(Path(tmp) / split, shown_from=Path(tmp)) for split in SPLITS}


def decoded_from_archives(root: Path) -> dict:
    data = {}
    for split in SPLITS:
        classes = read_image_archive(root / f"{split}.tar.gz", split)
        sources, labels, shown = [], [], []
        for label, (cls, images) in enumerate(classes.items()):
            sources += images.values()
            labels += [label] * len(images)
            shown += [f"{split}/{cls}/{name}" for name in images]
        data[split] = decode_images(sources, labels, shown)
    return data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="../shared/data/cifar10-jpeg")
    root = Path(ap.parse_args().data_dir)
    t0 = time.perf_counter()
    before = unpacked_then_decoded(root)
    t1 = time.perf_counter()
    now = decoded_from_archives(root)
    t2 = time.perf_counter()
    same = all(before[s][0].equal(now[s][0]) and before[s][1].equal(now[s][1]) for s in SPLITS)
    print(f"unpacked, then decoded: {t1 - t0:.1f} s")
    print(f"decoded from archives:  {t2 - t1:.1f} s")
    print(f"the same tensors: {same}; speedup: {(t1 - t0) / (t2 - t1):.2f}")


if __name__ == "__main__":
    main()

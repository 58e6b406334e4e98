#!/usr/bin/env bash
# Gets a working tree ready for benchmarks/gpu/run.py on a GPU machine that has torch, timm and
# pluggy but not this package or torch-pruning: wheels in .whl/, the CIFAR-10 (JPEG) archives and
# the published ResNet-20 and -56 weights in .gl/ (both folders git-ignored; the device tool's `carry`
# takes them). Then, on the device (a 10-minute job):
#   pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site &&
#   python benchmarks/gpu/run.py --minutes 9 --out "$OUT"
set -euo pipefail
cd "$(dirname "$0")/../.."
shared=${HARNESS_SHARED:-../shared}
rm -rf .whl && mkdir -p .whl .gl/cifar10-jpeg
python -m pip wheel --quiet --no-deps -w .whl .
python -m pip download --quiet --no-deps torch-pruning==1.6.1 -d .whl
cp "$shared"/data/cifar10-jpeg/{train,test}.tar.gz "$shared"/data/cifar10-jpeg/SHA256SUMS .gl/cifar10-jpeg/
cp "$shared"/models/cifar-resnet/{resnet20-12fca82f,resnet56-4bfd9763}.th .gl/
du -sh .whl .gl

#!/usr/bin/env bash
# The portable kernels against the BLAS, in one run (make bench-portable): GFLOP/s product by
# product at the reference network's shapes (shards of 64 rows), then training samples/s of the
# reference network on both paths, alternated, epoch 2 of 2 (full MNIST, test set cut to 100).
# usage: bench_portable.sh SHARDWISE [ROUNDS]
set -euo pipefail
bin=$1
rounds=${2:-3}
"$bin" doctor --shapes
echo "training, reference network, epoch-2 samples/s:"
for i in $(seq "$rounds"); do
  for kernels in blas portable; do
    rate=$("$bin" train --epochs 2 --test-samples 100 --kernels "$kernels" | sed -n 's/^epoch 2\/2.*, \([0-9]*\) samples\/s.*/\1/p')
    echo "  $kernels $rate"
  done
done

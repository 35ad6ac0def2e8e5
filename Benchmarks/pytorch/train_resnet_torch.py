"""The README's residual network trained in PyTorch with the recipe of `make train-resnet`.

usage: train_resnet_torch.py SEED [EPOCHS] [MNIST_FOLDER]
       train_resnet_torch.py --evaluate CHECKPOINT [MNIST_FOLDER]
The model is Examples/models/mnist-resnet.yaml built as torch.nn modules (Tests/python/shardwise_torch.py:
the same tree, parameter names and initialisation-independent structure; PyTorch's own initialisation),
trained as Shardwise trains it: MNIST pixels / 255, batch 128 (the last partial batch dropped), Adam
at 2e-3 with Shardwise's cosine schedule (per step, down to 1% of the base rate), no weight decay,
BatchNorm over each whole batch, dropout 0.3, threads = the cores of this process.
Prints the test error after each epoch, and the mean training step time.

With --evaluate, nothing trains: a Shardwise checkpoint of `make train-resnet` (a checkpoint folder, or its
model.safetensors) is loaded into the same torch.nn tree by name (strict, running statistics included)
and its MNIST test error printed, to set beside the one Shardwise reported.
"""
import gzip
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "Tests", "python"))
from shardwise_torch import build, load, model_file  # noqa: E402

evaluate = sys.argv[1] == "--evaluate"
if evaluate:
    checkpoint = sys.argv[2]
    folder = sys.argv[3] if len(sys.argv) > 3 else "../shared/datasets/mnist"
else:
    seed = int(sys.argv[1])
    epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    folder = sys.argv[3] if len(sys.argv) > 3 else "../shared/datasets/mnist"
    torch.manual_seed(seed)
torch.set_num_threads(len(os.sched_getaffinity(0)))


def idx(name):
    with gzip.open(os.path.join(folder, name)) as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


x_train = torch.from_numpy(idx("train-images-idx3-ubyte.gz").astype(np.float32) / 255).reshape(-1, 1, 28, 28)
y_train = torch.from_numpy(idx("train-labels-idx1-ubyte.gz").astype(np.int64))
x_test = torch.from_numpy(idx("t10k-images-idx3-ubyte.gz").astype(np.float32) / 255).reshape(-1, 1, 28, 28)
y_test = torch.from_numpy(idx("t10k-labels-idx1-ubyte.gz").astype(np.int64))

model = build(*model_file("Examples/models/mnist-resnet.yaml"))


def test_error():
    model.eval()
    with torch.no_grad():
        wrong = sum((model(x_test[i:i + 1000]).argmax(1) != y_test[i:i + 1000]).sum().item() for i in range(0, len(x_test), 1000))
    return 100 * wrong / len(x_test)


if evaluate:
    from safetensors.torch import load_file
    path = os.path.join(checkpoint, "model.safetensors") if os.path.isdir(checkpoint) else checkpoint
    load(model, load_file(path))
    print(f"{path}: loaded by name into torch.nn; test error {test_error():.2f}%")
    sys.exit(0)
base, batch, floor = 2e-3, 128, 0.01
optimizer = torch.optim.Adam(model.parameters(), lr=base)
steps = len(x_train) // batch
step_seconds = []
for epoch in range(epochs):
    model.train()
    order = torch.randperm(len(x_train))
    for s in range(steps):
        progress = min((epoch + s / steps) / epochs, 1)
        for group in optimizer.param_groups:
            group["lr"] = base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))
        rows = order[s * batch:(s + 1) * batch]
        start = time.perf_counter()
        optimizer.zero_grad()
        F.cross_entropy(model(x_train[rows]), y_train[rows]).backward()
        optimizer.step()
        step_seconds.append(time.perf_counter() - start)
    error = test_error()
    print(f"seed {seed} epoch {epoch + 1}/{epochs}: test error {error:.2f}%, "
          f"step {1e3 * sum(step_seconds[-steps:]) / steps:.1f} ms", flush=True)
print(f"seed {seed}: final test error {error:.2f}%, mean step {1e3 * sum(step_seconds) / len(step_seconds):.1f} ms")

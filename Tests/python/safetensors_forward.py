"""Loads a Shardwise model.safetensors with the `safetensors` package and runs the
network's forward pass in numpy on the MNIST test set; prints the test error in percent.

usage: safetensors_forward.py MODEL.safetensors MNIST_DIR [N_TEST_SAMPLES]
"""
import gzip
import json
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file


def idx(path, offset):
    with gzip.open(path) as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


def main():
    model, folder = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 10000
    tensors = load_file(model)
    with safe_open(model, framework="numpy") as f:
        network = json.loads(f.metadata()["network"])
    images = idx(f"{folder}/t10k-images-idx3-ubyte.gz", 16).reshape(-1, 784)[:n].astype(np.float32) / 255
    labels = idx(f"{folder}/t10k-labels-idx1-ubyte.gz", 8)[:n]
    layers = len(network["hidden_sizes"]) + 1
    h = images
    for i in range(layers):
        w, b = tensors[f"layers.{i}.weight"], tensors[f"layers.{i}.bias"]  # (out, in), as nn.Linear
        h = h @ w.T + b
        if i < layers - 1:
            h = np.maximum(h, 0)
    print("%.2f" % (100 * np.mean(h.argmax(axis=1) != labels)))


main()

"""Loads a Shardwise checkpoint of the tabular test model into the equivalent PyTorch model
and checks that its predictions equal `shardwise predict`'s.

usage: tabular_torch.py MODEL.safetensors FEATURES.csv PREDICTIONS.csv
The model (layers "embedding(6, 3) embedding(4, 2) linear(16) relu dropout(0.1) linear(3)")
is written here as a user would write it in PyTorch; `load_state_dict(strict=True)` proves the
names and shapes match. Exit status 0 when every probability agrees to 1e-5 and every class
is the same, 1 otherwise, 77 when torch is missing.
"""
import json
import struct
import sys

try:
    import numpy as np
    import torch
    import torch.nn as nn
except ImportError as error:  # pragma: no cover
    print(f"missing: {error}")
    sys.exit(77)


def load_safetensors(path):
    data = open(path, "rb").read()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + size])
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        start, end = entry["data_offsets"]
        values = np.frombuffer(data[8 + size + start:8 + size + end], dtype="<f4").reshape(entry["shape"])
        tensors[name] = torch.from_numpy(values.copy())
    return tensors


class Tabular(nn.Module):
    """Two categorical columns (6 and 4 categories) first, then the numeric columns."""

    def __init__(self, numeric):
        super().__init__()
        self.layers = nn.ModuleList([nn.Embedding(6, 3), nn.Embedding(4, 2), nn.Linear(numeric + 3 + 2, 16), nn.Linear(16, 3)])
        self.dropout = nn.Dropout(0.1)

    def forward(self, x):
        # Each embedding reads the first column and appends its vector after the others.
        x = torch.cat([x[:, 1:], self.layers[0](x[:, 0].long())], dim=1)
        x = torch.cat([x[:, 1:], self.layers[1](x[:, 0].long())], dim=1)
        x = self.dropout(torch.relu(self.layers[2](x)))
        return self.layers[3](x)


model_path, features_path, predictions_path = sys.argv[1:4]
features = np.loadtxt(features_path, delimiter=",", skiprows=1, dtype=np.float32, ndmin=2)
model = Tabular(features.shape[1] - 2)
model.load_state_dict(load_safetensors(model_path), strict=True)
model.eval()
with torch.no_grad():
    probabilities = torch.softmax(model(torch.from_numpy(features)), dim=1).numpy()
theirs = np.loadtxt(predictions_path, delimiter=",", skiprows=1, ndmin=2)
classes_agree = (theirs[:, 0].astype(int) == probabilities.argmax(axis=1)).all()
error = np.abs(theirs[:, 1:] - probabilities).max()
print(f"{len(features)} rows: largest probability difference {error:.2e}, classes {'equal' if classes_agree else 'DIFFER'}")
sys.exit(0 if classes_agree and error <= 1e-5 else 1)

"""A language model's ONNX export against Shardwise: the test loss ONNX Runtime computes.

usage: onnx_lm_check.py MODEL.onnx TEXT CONTEXT
Tokenizes TEXT by character as Shardwise does (sorted(set(text))), takes Shardwise's test set (the
windows starting every CONTEXT characters of the last 10%), runs the model's 'logits' and
'probabilities' in ONNX Runtime and prints the mean cross-entropy over every token of those
windows (from the logits, and from the probabilities: the two must agree).
"""
import sys

import numpy as np
import onnx
import onnxruntime as ort

path, text_path, t = sys.argv[1], sys.argv[2], int(sys.argv[3])
onnx.checker.check_model(onnx.load(path))
text = open(text_path, encoding="utf-8").read()
chars = sorted(set(text))
index = {c: i for i, c in enumerate(chars)}
ids = np.array([index[c] for c in text], dtype=np.int64)
split = len(ids) - round(len(ids) * 0.1)
starts = np.arange(split, len(ids) - t, t)
x = np.stack([ids[s:s + t] for s in starts]).astype(np.float32)
y = np.stack([ids[s + 1:s + t + 1] for s in starts])
session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
logits, probabilities = session.run(["logits", "probabilities"], {"input": x})
logits = logits.reshape(len(starts), t, -1).astype(np.float64)
top = logits.max(axis=2, keepdims=True)
log_softmax = logits - top - np.log(np.exp(logits - top).sum(axis=2, keepdims=True))
loss = -np.take_along_axis(log_softmax, y[:, :, None], axis=2).mean()
p = probabilities.reshape(len(starts), t, -1)
assert np.allclose(p.sum(axis=2), 1, atol=1e-5), "probabilities do not sum to 1 at each position"
from_p = -np.log(np.take_along_axis(p, y[:, :, None], axis=2)).mean()
print(f"test loss {loss:.4f} in ONNX Runtime (from the probabilities {from_p:.4f}), {len(starts)} windows")

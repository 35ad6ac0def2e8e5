"""Checks an exported ONNX model against Shardwise's own predictions.

usage: onnx_check.py MODEL.onnx INPUTS.npy PREDICTIONS.npy
INPUTS: the samples as stored (what the model's 'input' takes); PREDICTIONS: `shardwise predict
--out X.npy` for the same samples (classification: class, p0..; regression: prediction...).
Prints the largest differences; exit 1 when above 1e-5 (relative to max(1, |value|)).
Exit status 3 when onnx or onnxruntime is missing.
"""
import sys

import numpy as np

try:
    import onnx
    import onnxruntime
except ImportError as error:
    print(f"missing: {error}")
    sys.exit(3)

model_path, inputs_path, predictions_path = sys.argv[1:4]
model = onnx.load(model_path)
onnx.checker.check_model(model, full_check=True)
x = np.load(inputs_path).astype(np.float32).reshape(np.load(inputs_path).shape[0], -1)
predictions = np.load(predictions_path).astype(np.float64)
session = onnxruntime.InferenceSession(model_path, providers=["CPUExecutionProvider"])
names = [o.name for o in session.get_outputs()]
outputs = dict(zip(names, session.run(None, {"input": x})))
if "probabilities" in outputs:
    ours = predictions[:, 1:1 + outputs["probabilities"].shape[1]]
    theirs = outputs["probabilities"].astype(np.float64)
    agree = np.mean(np.argmax(theirs, axis=1) == predictions[:, 0])
else:
    ours = predictions[:, :outputs["prediction"].shape[1]]
    theirs = outputs["prediction"].astype(np.float64)
    agree = 1.0
error = np.max(np.abs(ours - theirs) / np.maximum(1, np.abs(ours)))
print(f"opset {model.opset_import[0].version}, outputs {names}, {x.shape[0]} samples: largest difference {error:.3g}, same class {agree:.4f}")
sys.exit(0 if error <= 1e-5 and agree == 1.0 else 1)

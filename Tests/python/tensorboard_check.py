"""Reads a Shardwise run's TensorBoard event file with TensorBoard's own EventAccumulator and
checks it against the run's metrics.jsonl, summary.json and checkpoint: every scalar at its
step with its value, one histogram per parameter tensor per epoch with the tensor's size,
and the configuration text.

usage: tensorboard_check.py RUN_FOLDER    (exit 3 when tensorboard is missing)
"""
import glob
import json
import os
import struct
import sys

try:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
except ImportError as error:
    print(f"missing: {error}")
    sys.exit(3)

run = sys.argv[1]
problems = []
acc = EventAccumulator(run, size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
acc.Reload()
tags = acc.Tags()
records = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
summary = json.load(open(os.path.join(run, "summary.json")))
steps_per_epoch = summary["train_samples"] // summary["configuration"]["batch_size"]


def close(a, b):
    return abs(a - b) <= 1e-6 * max(1.0, abs(b))


def check(condition, message):
    if not condition:
        problems.append(message)


# Per-epoch scalars: the value of metrics.jsonl (as float32) at step epoch x steps per epoch.
for tag, key in [("epoch/train_loss", "train_loss"), ("test/error_percent", "test_error_percent"),
                 ("test/rmse", "test_rmse"), ("validation/error_percent", "validation_error_percent"),
                 ("epoch/samples_per_second", "samples_per_second")]:
    expected = [(r["epoch"] * steps_per_epoch, r[key]) for r in records if key in r]
    if not expected:
        continue
    found = [(e.step, e.value) for e in acc.Scalars(tag)] if tag in tags["scalars"] else []
    check(len(found) == len(expected), f"{tag}: {len(found)} events, expected {len(expected)}")
    for (step, value), (want_step, want) in zip(found, expected):
        check(step == want_step and close(value, struct.unpack("f", struct.pack("f", want))[0]), f"{tag}: ({step}, {value}), expected ({want_step}, {want})")

# Per-step scalars: one per step, steps 1..N; the first learning rate is the base rate.
steps = len(records) * steps_per_epoch
for tag in ["train/loss", "train/learning_rate"]:
    events = acc.Scalars(tag) if tag in tags["scalars"] else []
    check([e.step for e in events] == list(range(1, steps + 1)), f"{tag}: steps {[e.step for e in events][:5]}..., expected 1..{steps}")
rates = acc.Scalars("train/learning_rate")
check(close(rates[0].value, struct.unpack("f", struct.pack("f", summary["configuration"]["optimizer"]["learning_rate"]))[0]), f"first learning rate {rates[0].value}")
losses = [e.value for e in acc.Scalars("train/loss")]
mean_first_epoch = sum(losses[:steps_per_epoch]) / steps_per_epoch
check(abs(mean_first_epoch - records[0]["train_loss"]) <= 1e-4 * records[0]["train_loss"], f"epoch 1's step losses average {mean_first_epoch}, metrics.jsonl says {records[0]['train_loss']}")

# Histograms: each tensor of the newest checkpoint, once per epoch, with its size.
checkpoint = sorted(glob.glob(os.path.join(run, "checkpoint-*")))[-1]
with open(os.path.join(checkpoint, "model.safetensors"), "rb") as f:
    header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
sizes = {name: eval("*".join(map(str, info["shape"])) or "1") for name, info in header.items() if name != "__metadata__"}
check(sorted(tags["histograms"]) == sorted(sizes), f"histograms {sorted(tags['histograms'])}, tensors {sorted(sizes)}")
for name, size in sizes.items():
    events = acc.Histograms(name) if name in tags["histograms"] else []
    check([e.step for e in events] == [r["epoch"] * steps_per_epoch for r in records], f"{name}: steps {[e.step for e in events]}")
    check(all(e.histogram_value.num == size for e in events), f"{name}: counts {[e.histogram_value.num for e in events]}, expected {size}")
    check(all(sum(e.histogram_value.bucket) == size for e in events), f"{name}: bucket counts do not add up to {size}")

# The configuration as text.
text = acc.Tensors("configuration")[0].tensor_proto.string_val[0].decode() if "configuration" in tags["tensors"] else ""
check('"batch_size"' in text, "no configuration text")

print(f"{len(tags['scalars'])} scalar tags, {len(tags['histograms'])} histogram tags, {steps} steps, {len(records)} epochs")
for p in problems:
    print("PROBLEM:", p)
sys.exit(1 if problems else 0)

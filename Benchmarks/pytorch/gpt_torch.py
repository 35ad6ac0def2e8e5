"""The README's character-level GPT (Examples/models/shakespeare-char.yaml) in PyTorch, with the recipe of `make train-gpt`.

usage: gpt_torch.py [--steps N] [--seed S] [--batch B] [--model YAML] [--no-test] [--data FILE]
                                                                             train, print the step time and the test loss
       gpt_torch.py --evaluate CHECKPOINT [--data FILE] [--model YAML]        a Shardwise checkpoint's test loss in PyTorch

The model is built as torch.nn modules from the model file (Tests/python/shardwise_torch.py: the same tree
and parameter names; PyTorch's own initialisation), trained as nanoGPT trains it: windows of 64 characters
drawn at random from the first 90% of the text (torch.randint), batch 12, AdamW at 1e-3 with betas (0.9,
0.99), weight decay 0.1 on the weight matrices only, 100 warm-up steps ((t + 1) / 101 of the rate) and a
cosine to 1e-4 over the run, gradient clipping at 1, threads = the cores of this process. The test loss is
Shardwise's: the mean cross-entropy over every token of the windows that start every 64 characters of the
last 10% of the text.

With --evaluate, nothing trains: the checkpoint's model.safetensors is loaded into the same modules by name
(strict) and the test loss printed, to set beside the one Shardwise reported.
"""
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "Tests", "python"))
from shardwise_torch import build, load, model_file  # noqa: E402

args = sys.argv[1:]


def option(name, default):
    return type(default)(args[args.index(name) + 1]) if name in args else default


root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
data_path = option("--data", os.path.join(root, "..", "shared", "datasets", "tinyshakespeare", "input.txt"))
text = open(data_path, encoding="utf-8").read()
chars = sorted(set(text))
index = {c: i for i, c in enumerate(chars)}
ids = torch.tensor([index[c] for c in text], dtype=torch.long)
split = len(ids) - round(len(ids) * 0.1)
layers, shape = model_file(option("--model", os.path.join(root, "Examples", "models", "shakespeare-char.yaml")))
T = shape[0]
torch.set_num_threads(len(os.sched_getaffinity(0)))


def test_loss(model):
    """Shardwise's test set: windows every T tokens of the tail, each token's next id its label."""
    starts = torch.arange(split, len(ids) - T, T)
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for b in range(0, len(starts), 256):
            s = starts[b:b + 256]
            x = torch.stack([ids[i:i + T] for i in s]).float()
            y = torch.stack([ids[i + 1:i + T + 1] for i in s])
            logits = model(x).view(len(s), T, -1)
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
            count += y.numel()
    model.train()
    return total / count


def safetensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        tensors[name] = torch.from_numpy(np.frombuffer(raw[8 + n + begin:8 + n + end], dtype=np.float32).reshape(info["shape"]).copy())
    return tensors


if "--evaluate" in args:
    checkpoint = args[args.index("--evaluate") + 1]
    if os.path.isdir(checkpoint) and not os.path.exists(os.path.join(checkpoint, "model.safetensors")):
        checkpoint = os.path.join(checkpoint, sorted(n for n in os.listdir(checkpoint) if n.startswith("checkpoint-"))[-1])
    model = load(build(layers, shape), safetensors(os.path.join(checkpoint, "model.safetensors")))
    print(f"test loss {test_loss(model):.4f} in PyTorch ({checkpoint})")
    sys.exit(0)

steps, seed, batch = option("--steps", 2000), option("--seed", 1), option("--batch", 12)
torch.manual_seed(seed)
model = build(layers, shape)
matrices = [p for n, p in model.named_parameters() if p.dim() == 2 and "token" not in n and "position" not in n]
others = [p for n, p in model.named_parameters() if not (p.dim() == 2 and "token" not in n and "position" not in n)]
optimizer = torch.optim.AdamW([{"params": matrices, "weight_decay": 0.1}, {"params": others, "weight_decay": 0.0}], lr=1e-3, betas=(0.9, 0.99))


def rate(t):
    base = 1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t / steps)))
    return base * (t + 1) / 101 if t < 100 else base


times = []
for t in range(steps):
    start = time.perf_counter()
    for group in optimizer.param_groups:
        group["lr"] = rate(t)
    starts = torch.randint(0, split - T, (batch,))
    x = torch.stack([ids[i:i + T] for i in starts]).float()
    y = torch.stack([ids[i + 1:i + T + 1] for i in starts])
    logits = model(x).view(batch, T, -1)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    times.append(time.perf_counter() - start)
    if (t + 1) % 250 == 0 or steps <= 10:
        print(f"step {t + 1}: train loss {loss.item():.4f}", flush=True)
steady = times[5:] if len(times) > 10 else times[1:] if len(times) > 1 else times
mean = 1000 * sum(steady) / len(steady)
if "--no-test" in args:
    print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads: {mean:.1f} ms a step (mean of {len(steady)})")
else:
    print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads: {mean:.1f} ms a step (mean of {len(steady)}); test loss {test_loss(model):.4f}")

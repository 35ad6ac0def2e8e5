"""Compares Shardwise's layers, losses and optimizers with PyTorch's on the same inputs and weights.

usage: compare_pytorch.py FOLDER
FOLDER/manifest.json lists the cases Shardwise computed; each array is a raw little-endian
float32 file in FOLDER. For each case PyTorch builds the equivalent module (nn.Conv2d,
nn.MaxPool2d, ...), loss or torch.optim optimizer, runs the same computation in float32 and
the arrays are compared: the largest difference over the largest PyTorch magnitude of each
array (a normwise relative error) must be at most 1e-5.
Prints one line per array; exit status 1 on any mismatch, 77 when torch is missing.
"""
import json
import os
import sys

try:
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as error:  # pragma: no cover
    print(f"missing: {error}")
    sys.exit(77)

TOLERANCE = 1e-5
torch.set_num_threads(1)
folder = sys.argv[1]
manifest = json.load(open(os.path.join(folder, "manifest.json")))
failures = 0


def array(name, shape):
    values = np.fromfile(os.path.join(folder, name), dtype="<f4")
    return torch.from_numpy(values.reshape(shape).copy())


def compare(case, what, ours, theirs, scale=None):
    """`scale`: the magnitude the error is relative to (default: this array's largest)."""
    global failures
    ours = ours.detach().double().reshape(-1)
    theirs = theirs.detach().double().reshape(-1)
    scale = max(scale if scale is not None else theirs.abs().max().item(), 1e-30)
    error = (ours - theirs).abs().max().item() / scale
    ok = error <= TOLERANCE and ours.shape == theirs.shape
    failures += 0 if ok else 1
    print(f"{'ok  ' if ok else 'FAIL'} {case:<34} {what:<22} relative error {error:.2e}")


def module(case):
    kind, a = case["kind"], case["args"]
    if kind == "conv":
        return nn.Conv2d(a["in"], a["out"], tuple(a["kernel"]), stride=tuple(a["stride"]), padding=tuple(a["padding"]), dilation=tuple(a["dilation"]))
    if kind == "maxpool":
        return nn.MaxPool2d(tuple(a["kernel"]), stride=tuple(a["stride"]), padding=tuple(a["padding"]))
    if kind == "avgpool":
        return nn.AvgPool2d(tuple(a["kernel"]), stride=tuple(a["stride"]), padding=tuple(a["padding"]), count_include_pad=True)
    if kind == "flatten":
        return nn.Flatten()
    if kind == "tanh":
        return nn.Tanh()
    if kind == "sigmoid":
        return nn.Sigmoid()
    if kind == "gelu":
        return nn.GELU(approximate=a["approximate"])
    if kind == "leaky_relu":
        return nn.LeakyReLU(a["slope"])
    if kind == "embedding":
        emb = nn.Embedding(a["count"], a["dim"])
        return emb
    if kind == "layernorm":
        return nn.LayerNorm(a["shape"], eps=a["eps"])
    if kind == "rmsnorm":
        return nn.RMSNorm(a["shape"])
    if kind == "groupnorm":
        return nn.GroupNorm(a["groups"], a["channels"], eps=a["eps"])
    if kind == "linear":
        return nn.Linear(a["in"], a["out"])
    if kind in ("attention", "tokens"):
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from shardwise_torch import CausalSelfAttention, TokenEmbedding
        return CausalSelfAttention(a["width"], a["heads"]) if kind == "attention" else TokenEmbedding(a["vocabulary"], a["dim"], a["context"])
    raise ValueError(kind)


def layer_case(case):
    name = case["name"]
    rows, shape, out_shape = case["rows"], case["input_shape"], case["output_shape"]
    x = array(case["input"], [rows] + shape).requires_grad_(True)
    m = module(case)
    params = list(m.parameters())
    with torch.no_grad():
        for p, (file, pshape) in zip(params, case["parameters"]):
            p.copy_(array(file, pshape))
    if case["kind"] == "embedding":
        y = torch.cat([x[:, 1:], m(x[:, 0].detach().long())], dim=1)
    else:
        y = m(x)
    r = array(case["projection"], [rows] + out_shape)
    (y * r).sum().backward()
    compare(name, "output", array(case["output"], [rows] + out_shape), y)
    grad = x.grad.clone() if x.grad is not None else torch.zeros_like(x)  # token ids have no gradient
    if case["kind"] == "embedding":
        grad[:, 0] = 0  # a category has no gradient
    compare(name, "input gradient", array(case["input_gradient"], [rows] + shape), grad)
    for p, (file, pshape) in zip(params, case["parameter_gradients"]):
        compare(name, "parameter gradient " + "x".join(map(str, pshape)), array(file, pshape), p.grad)


def model_case(case):
    """A model from the layer language as a tree of torch.nn modules (shardwise_torch.py), loaded by name."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from shardwise_torch import build, load
    name, rows, shape = case["name"], case["rows"], case["input_shape"]
    m = build(case["layers"], shape)
    load(m, {n: array(file, pshape) for n, file, pshape in case["parameters"]})
    m.train(case["train"])
    x = array(case["input"], [rows] + shape)
    # A language model's (T, V) outputs: a label a position, the loss the mean over every token.
    y = m(x).reshape(-1, case["classes"])
    labels = torch.tensor(case["labels"], dtype=torch.int64)
    F.cross_entropy(y, labels).backward()
    compare(name, "logits", array(case["output"], [rows * case.get("positions", 1), case["classes"]]), y)
    grads = dict(m.named_parameters())
    # Relative to the model's largest gradient: a bias before a BatchNorm has a gradient that is
    # zero in exact arithmetic, so both sides hold rounding noise there.
    scale = max(p.grad.abs().max().item() for p in grads.values())
    for n, file, pshape in case["gradients"]:
        compare(name, "d " + n, array(file, pshape), grads[n].grad, scale)
    buffers = dict(m.named_buffers())
    for n, file, pshape in case["buffers_after"]:
        compare(name, n, array(file, pshape), buffers[n])


def loss_case(case):
    name, rows, width = case["name"], case["rows"], case["width"]
    z = array(case["outputs"], [rows, width]).requires_grad_(True)
    kind = case["kind"]
    if kind == "cross_entropy":
        labels = torch.from_numpy(np.array(case["labels"], dtype=np.int64))
        loss = F.cross_entropy(z, labels, label_smoothing=case["label_smoothing"])
    elif kind == "bce_with_logits":
        loss = F.binary_cross_entropy_with_logits(z, array(case["targets"], [rows, width]))
    else:
        loss = F.mse_loss(z, array(case["targets"], [rows, width]))
    loss.backward()
    compare(name, "loss", torch.tensor([case["loss"]]), loss.reshape(1))
    compare(name, "gradient", array(case["gradient"], [rows, width]), z.grad)


def optimizer_case(case):
    name, count, steps = case["name"], case["count"], case["steps"]
    w = nn.Parameter(array(case["initial"], [count]))
    h = case["hyper"]
    algorithm = case["algorithm"]
    if algorithm == "sgd":
        opt = torch.optim.SGD([w], lr=h["lr"], momentum=h["momentum"], weight_decay=h["weight_decay"], nesterov=h["nesterov"])
    elif algorithm == "adam":
        opt = torch.optim.Adam([w], lr=h["lr"], betas=(h["beta1"], h["beta2"]), eps=h["eps"], weight_decay=h["weight_decay"])
    elif algorithm == "adamw":
        opt = torch.optim.AdamW([w], lr=h["lr"], betas=(h["beta1"], h["beta2"]), eps=h["eps"], weight_decay=h["weight_decay"])
    else:
        opt = torch.optim.RMSprop([w], lr=h["lr"], alpha=h["beta2"], eps=h["eps"], weight_decay=h["weight_decay"], momentum=h["momentum"])
    gradients = array(case["gradients"], [steps, count])
    for t in range(steps):
        w.grad = gradients[t].clone()
        if case["clip_norm"] is not None:
            torch.nn.utils.clip_grad_norm_([w], case["clip_norm"])
        opt.step()
    compare(name, f"weights after {steps} steps", array(case["final"], [count]), w)
    state = opt.state[w]
    for key, file in case["state"].items():
        compare(name, key, array(file, [count]), state[key])


for case in manifest["cases"]:
    {"layer": layer_case, "loss": loss_case, "optimizer": optimizer_case, "model": model_case}[case["type"]](case)
print(f"{len(manifest['cases'])} cases, {failures} arrays over {TOLERANCE:g}")
sys.exit(1 if failures else 0)

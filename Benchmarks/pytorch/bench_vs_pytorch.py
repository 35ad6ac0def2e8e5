"""Shardwise against PyTorch on this machine, in one run, with the same threads.

usage: bench_vs_pytorch.py SHARDWISE [REPEATS]
- each convolution of Examples/models/mnist-cnn.yaml, forward + backward at batch 128 on one
  thread (`shardwise bench --model` times it on one pinned worker; PyTorch with
  torch.set_num_threads(1)), in GFLOP/s and as a fraction of the single-thread sgemm rate
  Shardwise measures in the same run;
- the whole CNN's training step (Adam), the residual network's (Examples/models/mnist-resnet.yaml,
  BatchNorm with the global batch's statistics; PyTorch: the same tree of torch.nn modules, built
  from the same description by Tests/python/shardwise_torch.py) and the reference MLP's (momentum
  SGD, dropout) at batch 128 on all cores (Shardwise: one worker per core; PyTorch: that many threads).
Each figure is the median of REPEATS (default 3) alternating runs. Needs torch.
"""
import json
import os
import statistics
import subprocess
import sys
import time

try:
    import torch
    import torch.nn as nn
except ImportError:
    sys.exit("bench_vs_pytorch.py needs PyTorch: python3 -m pip install torch (the CPU build: torch==2.13.0+cpu where the machine's wheels hold it)")

shardwise = sys.argv[1]
repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 3
cores = len(os.sched_getaffinity(0))
batch = 128


def shardwise_bench(model, optimizer):
    out = subprocess.run([shardwise, "bench", "--model", model, "--optimizer", optimizer, "--json", "--steps", "40"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def best_time(step, warmup=3, runs=10):
    for _ in range(warmup):
        step()
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - start)
    return best


def torch_conv(layer, shape, input_gradient):
    torch.set_num_threads(1)
    conv = nn.Conv2d(shape[0], layer["out"], layer["kernel"])
    x = torch.randn(batch, *shape, requires_grad=input_gradient)

    def step():
        conv.zero_grad()
        y = conv(x)
        y.backward(torch.full_like(y, 1e-3))
    return best_time(step)


def torch_step(model, optimizer, shape):
    torch.set_num_threads(cores)
    x = torch.randn(batch, *shape)
    y = torch.randint(0, 10, (batch,))

    def step():
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    for _ in range(5):
        step()
    start = time.perf_counter()
    for _ in range(40):
        step()
    return (time.perf_counter() - start) / 40


cnn = nn.Sequential(nn.Conv2d(1, 32, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                    nn.Dropout(0.5), nn.Linear(1024, 512), nn.ReLU(), nn.Dropout(0.5), nn.Linear(512, 10))
mlp = nn.Sequential(nn.Dropout(0.2), nn.Linear(784, 1024), nn.ReLU(), nn.Dropout(0.5), nn.Linear(1024, 1024), nn.ReLU(), nn.Dropout(0.5),
                    nn.Linear(1024, 1024), nn.ReLU(), nn.Dropout(0.5), nn.Linear(1024, 10))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "Tests", "python"))
from shardwise_torch import build, model_file  # noqa: E402
resnet = build(*model_file("Examples/models/mnist-resnet.yaml")).train()
convs = [({"out": 32, "kernel": 5}, (1, 28, 28), False), ({"out": 64, "kernel": 5}, (32, 12, 12), True)]

results = {"ours_conv": [[], []], "torch_conv": [[], []], "ours_cnn": [], "torch_cnn": [], "ours_mlp": [], "torch_mlp": [], "gemm": [], "ours_resnet": [], "torch_resnet": []}
for _ in range(repeats):
    report = shardwise_bench("Examples/models/mnist-cnn.yaml", "adam")
    results["gemm"].append(report["gemm_gflops"])
    for i, c in enumerate(report["convolutions"]):
        results["ours_conv"][i].append(c["milliseconds"] / 1e3)
    results["ours_cnn"].append(report["step_milliseconds"] / 1e3)
    results["ours_mlp"].append(shardwise_bench("Examples/models/mlp-reference.yaml", "sgd")["step_milliseconds"] / 1e3)
    results["ours_resnet"].append(shardwise_bench("Examples/models/mnist-resnet.yaml", "adam")["step_milliseconds"] / 1e3)
    results["torch_resnet"].append(torch_step(resnet, torch.optim.Adam(resnet.parameters(), 1e-3), (1, 28, 28)))
    for i, (layer, shape, grad) in enumerate(convs):
        results["torch_conv"][i].append(torch_conv(layer, shape, grad))
    results["torch_cnn"].append(torch_step(cnn, torch.optim.Adam(cnn.parameters(), 1e-3), (1, 28, 28)))
    results["torch_mlp"].append(torch_step(mlp, torch.optim.SGD(mlp.parameters(), 0.05, momentum=0.9), (784,)))

m = {k: (statistics.median(v) if not isinstance(v[0], list) else [statistics.median(x) for x in v]) for k, v in results.items()}
gemm = m["gemm"]
print(f"PyTorch {torch.__version__}, {cores} cores; single-thread sgemm {gemm:.1f} GFLOP/s (measured by Shardwise in this run); median of {repeats}")
print()
print("| what | Shardwise | PyTorch | Shardwise / PyTorch speed |")
print("|---|---|---|---|")
for i, (layer, shape, grad) in enumerate(convs):
    out_hw = shape[1] - layer["kernel"] + 1
    macs = layer["out"] * shape[0] * layer["kernel"] ** 2 * out_hw * out_hw * batch
    flops = 2 * macs * (3 if grad else 2)
    ours, theirs = m["ours_conv"][i], m["torch_conv"][i]
    print(f"| conv {shape} -> ({layer['out']}, {out_hw}, {out_hw}), fwd+bwd, batch {batch}, 1 thread | {ours*1e3:.2f} ms, {flops/ours*1e-9:.1f} GFLOP/s "
          f"({100*flops/ours*1e-9/gemm:.0f}% of sgemm) | {theirs*1e3:.2f} ms, {flops/theirs*1e-9:.1f} GFLOP/s | {theirs/ours:.2f}x |")
print(f"| CNN training step (Adam), batch {batch}, {cores} workers / threads | {m['ours_cnn']*1e3:.1f} ms | {m['torch_cnn']*1e3:.1f} ms | {m['torch_cnn']/m['ours_cnn']:.2f}x |")
print(f"| ResNet training step (Adam, BatchNorm), batch {batch}, {cores} workers / threads | {m['ours_resnet']*1e3:.1f} ms | {m['torch_resnet']*1e3:.1f} ms | {m['torch_resnet']/m['ours_resnet']:.2f}x |")
print(f"| reference MLP step (SGD), batch {batch}, {cores} workers / threads | {m['ours_mlp']*1e3:.1f} ms | {m['torch_mlp']*1e3:.1f} ms | {m['torch_mlp']/m['ours_mlp']:.2f}x |")

"""Own-data benchmarks (make bench-data): not part of make test.

1. Throughput: the reference network trained on MNIST held as floats in memory (the IDX
   folder) against the same images as a memory-mapped uint8 NPY, alternated, 2 epochs each.
2. Memory: a generated uint8 data set of at least 8 GB and the same at 1/8 the size; peak
   RssAnon (sampled from /proc) of a training run over each.
3. CSV: parsing a ~1 GB numeric CSV with Shardwise (all workers, into its cache) against
   pandas' read_csv (C engine), and the cached second start.

usage: bench_data.py SHARDWISE MNIST_FOLDER WORK_FOLDER [--skip-throughput] [--skip-memory] [--skip-csv]
"""
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np

shardwise, mnist, work = sys.argv[1:4]
os.makedirs(work, exist_ok=True)


def run(args, sample_memory=False):
    """Runs shardwise; returns (seconds, peak RssAnon in MB, output)."""
    start = time.time()
    process = subprocess.Popen([shardwise] + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = [0]

    def sample():
        while process.poll() is None:
            try:
                with open(f"/proc/{process.pid}/status") as f:
                    for line in f:
                        if line.startswith("RssAnon:"):
                            peak[0] = max(peak[0], int(line.split()[1]))
            except OSError:
                pass
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    if sample_memory:
        sampler.start()
    output = process.communicate()[0]
    if sample_memory:
        sampler.join()
    if process.returncode != 0:
        sys.exit(f"shardwise {' '.join(args)} failed:\n{output}")
    return time.time() - start, peak[0] / 1024, output


def throughput():
    import gzip
    def idx(name, offset):
        return np.frombuffer(gzip.open(f"{mnist}/{name}.gz").read()[offset:], dtype=np.uint8)
    np.save(f"{work}/mnist-x.npy", idx("train-images-idx3-ubyte", 16).reshape(-1, 784))
    np.save(f"{work}/mnist-y.npy", idx("train-labels-idx1-ubyte", 8).astype(np.int64))
    np.save(f"{work}/mnist-test-x.npy", idx("t10k-images-idx3-ubyte", 16).reshape(-1, 784))
    np.save(f"{work}/mnist-test-y.npy", idx("t10k-labels-idx1-ubyte", 8).astype(np.int64))
    sources = {
        "in-memory float (IDX)": ["--data", mnist],
        "mapped uint8 (NPY)": ["--data", f"{work}/mnist-x.npy,{work}/mnist-y.npy", "--test-data", f"{work}/mnist-test-x.npy,{work}/mnist-test-y.npy"],
    }
    rates = {name: [] for name in sources}
    hashes = {}
    for _ in range(3):
        for name, flags in sources.items():
            out = f"{work}/run"
            run(["train", "--epochs", "2", "--test-samples", "100", "--out", out, "--overwrite"] + flags)
            summary = json.load(open(f"{out}/summary.json"))
            rates[name].append(summary["epochs"][1]["samples_per_second"])
            hashes[name] = summary["weights_sha256"]
    print("## Throughput: reference network, 2 workers, epoch-2 samples/s (alternated)")
    for name, values in rates.items():
        print(f"- {name}: {', '.join(f'{v:.0f}' for v in values)} (mean {np.mean(values):.0f})")
    a, b = [np.mean(v) for v in rates.values()]
    print(f"- mapped / in-memory: {b / a:.3f}")
    print(f"- weights_sha256: {'identical' if len(set(hashes.values())) == 1 else hashes}")


def memory():
    features = 3072
    print("## Memory: peak RssAnon while training on generated uint8 data (3072 features, 300 steps)")
    for gigabytes in [8.0, 1.0]:
        rows = int(gigabytes * 1e9 / features) + 1
        x = f"{work}/big-{gigabytes:g}-x.npy"
        y = f"{work}/big-{gigabytes:g}-y.npy"
        if not os.path.exists(x):
            array = np.lib.format.open_memmap(x, mode="w+", dtype=np.uint8, shape=(rows, features))
            rng = np.random.default_rng(1)
            step = 100_000
            for start in range(0, rows, step):
                array[start:start + step] = rng.integers(0, 256, size=(min(step, rows - start), features), dtype=np.uint8)
            array.flush()
            del array
            np.save(y, rng.integers(0, 10, size=rows).astype(np.int64))
        seconds, peak, output = run(["train", "--data", f"{x},{y}", "--epochs", "1", "--stop-after-steps", "300"], sample_memory=True)
        print(f"- {os.path.getsize(x) / 1e9:.2f} GB ({rows} samples): peak RssAnon {peak:.0f} MB, {seconds:.1f} s")


def csv():
    path = f"{work}/big.csv"
    if not os.path.exists(path):
        rng = np.random.default_rng(2)
        block = f"{work}/block.csv"
        np.savetxt(block, np.hstack([rng.normal(size=(200_000, 40)) * 100, rng.integers(0, 10, size=(200_000, 1))]), fmt="%.6g", delimiter=",")
        with open(path, "w") as out:
            out.write(",".join([f"f{i}" for i in range(40)] + ["label"]) + "\n")
            text = open(block).read()
            while out.tell() < 1e9:
                out.write(text)
    size = os.path.getsize(path) / 1e9
    cache = f"{work}/cache"
    subprocess.run(["rm", "-rf", cache])
    first, _, output = run(["inspect", path, "--cache-dir", cache])
    parsed = [line for line in output.splitlines() if "parsed" in line]
    second, _, _ = run(["inspect", path, "--cache-dir", cache])
    try:
        import pandas
        start = time.time()
        frame = pandas.read_csv(path, engine="c")
        pandas_seconds = time.time() - start
        rows = len(frame)
        del frame
    except ImportError:
        pandas_seconds, rows = float("nan"), 0
    print(f"## CSV: {size:.2f} GB, {rows} rows, 41 columns")
    print(f"- shardwise inspect, first run (parse on every worker + write the NPY cache): {first:.2f} s ({parsed[0] if parsed else ''})")
    print(f"- shardwise inspect, second run (cache mapped): {second:.2f} s")
    print(f"- pandas.read_csv (C engine): {pandas_seconds:.2f} s; shardwise first run is {pandas_seconds / first:.2f}x as fast")


if "--skip-throughput" not in sys.argv:
    throughput()
if "--skip-memory" not in sys.argv:
    memory()
if "--skip-csv" not in sys.argv:
    csv()

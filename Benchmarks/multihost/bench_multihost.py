#!/usr/bin/env python3
"""make bench-multihost: two "hosts" (network namespaces, one core each) joined by a veth
link limited to 10 Gbit/s and 1 Gbit/s, training the reference network at 256 samples per
host per step, with and without the overlapped exchange, against one process on the same
two cores, all in one run. Needs root (namespaces); prints a Markdown table.

The step is split into compute (forward and backward), reduction (summing the shards and
updating) and exposed communication: the rest of the step's wall time, which the exchange
did not hide. The hosts share one kernel, and on this test bed the kernel's TCP work for
both ends of a link runs on the hosts' own cores: the table gives that work (system and
softirq CPU seconds per step on the two cores) so the figures can be carried to real hosts.
"""
import json, os, subprocess, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
TESTBED = os.path.join(HERE, "..", "..", "Tests", "multihost", "testbed.sh")
BINARY = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else ".build/release/shardwise")
CORES = os.environ.get("BENCH_CORES", "0,1").split(",")
STEPS = int(os.environ.get("BENCH_STEPS", "60"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
PER_HOST = 256
HOSTS = 2
BATCH = PER_HOST * HOSTS
TICK = os.sysconf("SC_CLK_TCK")

def kernel_seconds():
    """(system and irq, softirq) seconds so far on the bench's cores."""
    system = softirq = 0
    with open("/proc/stat") as f:
        for line in f:
            parts = line.split()
            if parts[0] in ("cpu" + c for c in CORES):
                system += int(parts[3]) + int(parts[6])
                softirq += int(parts[7])
    return system / TICK, softirq / TICK

def train(out, launcher, extra, shard):
    args = [BINARY, "train", "--train-samples", str(BATCH * STEPS), "--test-samples", "100", "--epochs", "1",
            "--batch-size", str(BATCH), "--shard-size", str(shard), "--seed", "1", "--affinity",
            "--out", out, "--overwrite"] + extra
    before = kernel_seconds()
    result = subprocess.run(launcher + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    after = kernel_seconds()
    if result.returncode != 0:
        sys.exit(f"bench-multihost: {' '.join(launcher + args)} failed:\n{result.stderr[-3000:]}")
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    split = summary["step_seconds"]
    return {
        "wall": split["wall"], "compute": split["compute"], "reduction": split["reduction"],
        "system": (after[0] - before[0]) / STEPS, "softirq": (after[1] - before[1]) / STEPS, "sha": summary["weights_sha256"], "traffic": summary.get("traffic"),
    }

def median_run(runs):
    """The run with the median wall time (the machine is shared and noisy)."""
    return sorted(runs, key=lambda r: r["wall"])[len(runs) // 2]

def main():
    if os.geteuid() != 0:
        sys.exit("bench-multihost: needs root (network namespaces)")
    check = subprocess.run([TESTBED, "--check"], capture_output=True, text=True)
    if check.returncode != 0:
        sys.exit(check.stdout.strip() or check.stderr.strip())
    work = tempfile.mkdtemp(prefix="shardwise-multihost-")
    print(f"Reference network (784-1024x3-10, 2,913,290 parameters, 11.7 MB of gradient), {PER_HOST} samples per host per step "
          f"(global batch {BATCH}), {STEPS} steps, median of {REPEATS} runs; cores {','.join(CORES)}; efficiency: one process "
          f"with {HOSTS} workers on the same cores (the ideal on this machine) over the configuration's step time.\n")
    print("| shards | configuration | exchange | step ms | compute ms | reduction ms | exposed communication ms | efficiency | kernel ms/step: system / softirq (both cores) | sent MB/step/rank | ring all-reduce MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    mismatch = False
    # One shard per host (auto: the scatter, a ring all-reduce's bytes), then four (auto: the chain,
    # beside the scatter it replaces).
    for shard, patterns in ((PER_HOST, ["auto"]), (PER_HOST // 4, ["auto", "scatter"])):
        measure = lambda launcher, extra: median_run([train(f"{work}/run", launcher, extra, shard) for _ in range(REPEATS)])
        single = measure(["taskset", "-c", ",".join(CORES)], ["--workers", str(HOSTS)])
        rows = [("1 process x 2 workers (the ideal)", "-", single)]
        for rate in ("10gbit", "1gbit"):
            for pattern in patterns:
                for overlap in ((True, False) if pattern == "auto" else (True,)):
                    launcher = [TESTBED, "--hosts", str(HOSTS), "--rate", rate, "--cores", ";".join(CORES), "--timeout", "600", "--"]
                    extra = ["--exchange", pattern] + ([] if overlap else ["--no-overlap"])
                    run = measure(launcher, extra)
                    name = f"{run['traffic']['pattern']}, {'overlapped' if overlap else 'not overlapped'}"
                    rows.append((f"2 hosts x 1 core, {rate.replace('gbit', ' Gbit/s')}", name, run))
        for name, mode, r in rows:
            exposed = r["wall"] - r["compute"] - r["reduction"]
            traffic = r["traffic"]
            sent = f"{traffic['sent_bytes'] / 1e6:.2f}" if traffic else "-"
            ring = f"{traffic['ring_allreduce_bytes'] / 1e6:.2f}" if traffic else "-"
            print(f"| {BATCH // shard} of {shard} | {name} | {mode} | {r['wall'] * 1e3:.1f} | {r['compute'] * 1e3:.1f} | {r['reduction'] * 1e3:.1f} | "
                  f"{max(exposed, 0) * 1e3:.1f} | {100 * single['wall'] / r['wall']:.0f}% | {r['system'] * 1e3:.1f} / {r['softirq'] * 1e3:.1f} | {sent} | {ring} |")
        shas = {r["sha"] for _, _, r in rows}
        if len(shas) != 1:
            mismatch = True
            print(f"\nweights DIFFER with shards of {shard}: {', '.join(sorted(shas))}")
    print("\nweights: " + ("DIFFER (see above)" if mismatch else "identical to the one process's in every configuration of each shard size"))
    subprocess.run(["rm", "-rf", work])
    if mismatch:
        sys.exit(1)

main()

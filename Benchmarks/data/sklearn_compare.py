"""Shardwise against scikit-learn's MLP on scikit-learn's own data sets (digits, breast cancer,
diabetes), on the same fixed split (Tests/python/export_sklearn.py), with comparable settings:
the same layers, batch size, epochs, constant learning rate, momentum 0.9, no weight decay,
standardized features (and, for the regression, standardized targets). Shardwise with and
without dropout; scikit-learn has none. Three seeds each; mean and standard deviation.

usage: sklearn_compare.py SHARDWISE WORK_FOLDER   (Debian's python3 with python3-sklearn)
"""
import json
import subprocess
import sys

import numpy as np
from sklearn.compose import TransformedTargetRegressor
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.preprocessing import StandardScaler
import warnings

warnings.filterwarnings("ignore")
shardwise, work = sys.argv[1:3]
subprocess.run([sys.executable, "Tests/python/export_sklearn.py", work], check=True, stdout=subprocess.DEVNULL)
SEEDS = [1, 2, 3]
SETS = {
    "digits": dict(layers=(256, 256), lr=0.01, epochs=100, classification=True),
    "cancer": dict(layers=(64, 64), lr=0.01, epochs=100, classification=True),
    "diabetes": dict(layers=(64, 64), lr=0.01, epochs=100, classification=False),
}


def shardwise_run(name, spec, seed, dropout, workers):
    out = f"{work}/runs/{name}-{seed}-{dropout}-{workers}"
    flags = ["train", "--data", f"{work}/{name}-train.csv", "--test-data", f"{work}/{name}-test.csv",
             "--layers", ",".join(map(str, spec["layers"])), "--epochs", str(spec["epochs"]), "--lr", str(spec["lr"]),
             "--schedule", "constant", "--batch-size", "32", "--shard-size", "16", "--normalize", "standard",
             "--seed", str(seed), "--workers", str(workers), "--out", out, "--overwrite"]
    if not dropout:
        flags.append("--no-dropout")
    subprocess.run([shardwise] + flags, check=True, stdout=subprocess.DEVNULL)
    summary = json.load(open(f"{out}/summary.json"))
    figure = summary.get("final_test_error_percent") if spec["classification"] else summary.get("final_test_rmse")
    return figure, summary["weights_sha256"]


def sklearn_run(name, spec, seed):
    x, y = np.load(f"{work}/{name}-train-x.npy"), np.load(f"{work}/{name}-train-y.npy")
    xt, yt = np.load(f"{work}/{name}-test-x.npy"), np.load(f"{work}/{name}-test-y.npy")
    scaler = StandardScaler().fit(x)
    settings = dict(hidden_layer_sizes=spec["layers"], solver="sgd", momentum=0.9, nesterovs_momentum=False,
                    learning_rate="constant", learning_rate_init=spec["lr"], batch_size=32, max_iter=spec["epochs"],
                    alpha=0.0, random_state=seed, n_iter_no_change=10**9, tol=0)
    if spec["classification"]:
        model = MLPClassifier(**settings).fit(scaler.transform(x), y)
        return 100 * np.mean(model.predict(scaler.transform(xt)) != yt)
    model = TransformedTargetRegressor(MLPRegressor(**settings), transformer=StandardScaler()).fit(scaler.transform(x), y)
    return float(np.sqrt(np.mean((model.predict(scaler.transform(xt)) - yt) ** 2)))


def cell(values):
    return f"{np.mean(values):.2f} ± {np.std(values):.2f}"


print("| data set | metric | Shardwise, dropout 0.2/0.5 | Shardwise, no dropout | scikit-learn MLP | same weights: CSV 2 workers = CSV 1 worker |")
print("|---|---|---|---|---|---|")
for name, spec in SETS.items():
    drop, plain, sk, same = [], [], [], True
    for seed in SEEDS:
        figure, hash2 = shardwise_run(name, spec, seed, True, 2)
        _, hash1 = shardwise_run(name, spec, seed, True, 1)
        same = same and hash1 == hash2
        drop.append(figure)
        plain.append(shardwise_run(name, spec, seed, False, 2)[0])
        sk.append(sklearn_run(name, spec, seed))
    metric = "test error %" if spec["classification"] else "test RMSE"
    print(f"| {name} | {metric} | {cell(drop)} | {cell(plain)} | {cell(sk)} | {'yes' if same else 'NO'} |")

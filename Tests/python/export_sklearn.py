"""Exports scikit-learn's bundled data sets (digits, breast cancer, diabetes) with a fixed
train/test split, each as CSV (header row, target last), as an NPY pair and as NPZ.

usage: export_sklearn.py OUT_FOLDER
Writes OUT/<name>-{train,test}.csv, OUT/<name>-{train,test}-{x,y}.npy, OUT/<name>-{train,test}.npz,
OUT/<name>-{train,test}-deflated.npz (savez_compressed)
and OUT/<name>-{train,test}.safetensors (written by hand: the format is a JSON header and raw bytes).
Exit status 3 when scikit-learn is missing (the caller skips).
"""
import json
import os
import struct
import sys

try:
    import numpy as np
    from sklearn import datasets
    from sklearn.model_selection import train_test_split
except ImportError as error:  # pragma: no cover
    print(f"missing: {error}")
    sys.exit(3)


def export(out, name, bunch, classification):
    x = np.asarray(bunch.data, dtype=np.float64)
    y = np.asarray(bunch.target)
    y = y.astype(np.int64) if classification else y.astype(np.float64)
    split = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y if classification else None)
    names = [str(n).replace(" ", "_") for n in (bunch.feature_names if hasattr(bunch, "feature_names") and bunch.feature_names is not None else range(x.shape[1]))]
    for part, (features, targets) in zip(["train", "test"], [(split[0], split[2]), (split[1], split[3])]):
        base = os.path.join(out, f"{name}-{part}")
        with open(base + ".csv", "w") as f:
            f.write(",".join(names + ["target"]) + "\n")
            for row, target in zip(features, targets):
                f.write(",".join(repr(float(v)) for v in row) + "," + (str(int(target)) if classification else repr(float(target))) + "\n")
        np.save(base + "-x.npy", features)
        np.save(base + "-y.npy", targets)
        np.savez(base + ".npz", x=features.astype(np.float32), y=targets)
        np.savez_compressed(base + "-deflated.npz", features=features, labels=targets)
        write_safetensors(base + ".safetensors", {"features": features, "labels": targets})


def write_safetensors(path, arrays):
    names = {np.dtype(np.float64): "F64", np.dtype(np.float32): "F32", np.dtype(np.int64): "I64"}
    header, offset, blobs = {}, 0, []
    for name, array in arrays.items():
        data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": names[array.dtype], "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    export(out, "digits", datasets.load_digits(), True)
    export(out, "cancer", datasets.load_breast_cancer(), True)
    export(out, "diabetes", datasets.load_diabetes(scaled=False), False)
    print("exported to", out)


if __name__ == "__main__":
    main()

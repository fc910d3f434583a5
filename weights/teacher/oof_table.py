#!/usr/bin/env python3
"""Merge the out-of-fold scores of `train_teacher.py --folds K --fold I` into one teacher table.

    python3 oof_table.py ../shared/data/fer2013 OUTDIR/f0.oof.safetensors ... TABLE.safetensors

Every training image gets the scores of the fold teacher that did not train on it (averaged over
the runs when several runs of folds, split differently, are given). The table is
a safetensors file that `emocam train --teacher TABLE` reads instead of a model: `probs`
(images x 7, F32, each image averaged with its mirror), metadata `architecture=teacher_table`,
`classes` and `images` (JSON list of `class/file` names, matched against the training set's
files). Standard library only. Also prints the fold teachers' accuracy on their held-out images
and, averaged, on val.
"""
import json
import os
import struct
import sys
from array import array

CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def read_safetensors(path):
    buf = open(path, "rb").read()
    (n,) = struct.unpack_from("<Q", buf)
    header = json.loads(buf[8 : 8 + n])
    meta = header.pop("__metadata__", {})
    out = {}
    for name, info in header.items():
        lo, hi = info["data_offsets"]
        a = array({"F32": "f", "I64": "q"}[info["dtype"]])
        a.frombytes(buf[8 + n + lo : 8 + n + hi])
        if sys.byteorder != "little":
            a.byteswap()
        out[name] = a
    return out, meta


def names_and_labels(root, split):
    """The pack's order (pack_fer2013.py): classes in emocam's order, files sorted."""
    names, labels = [], []
    for label, c in enumerate(CLASSES):
        for f in sorted(os.listdir(os.path.join(root, split, c))):
            names.append(f"{c}/{f}")
            labels.append(label)
    return names, labels


def argmax(row):
    return max(range(len(row)), key=row.__getitem__)


def main():
    root, folds, out = sys.argv[1], sys.argv[2:-1], sys.argv[-1]
    names, labels = names_and_labels(root, "train")
    _, val_labels = names_and_labels(root, "val")
    k = len(CLASSES)
    probs = [None] * len(names)
    counts = [0] * len(names)
    val_sum = [0.0] * (len(val_labels) * k)
    for path in folds:
        t, meta = read_safetensors(path)
        idx, p, vp = t["index"], t["probs"], t["val_probs"]
        if len(p) != len(idx) * k or len(vp) != len(val_labels) * k or not idx:
            sys.exit(f"{path}: {len(idx)} indices, {len(p)} and {len(vp)} scores: expected "
                     f"{k} per held-out image and {k} per val image ({len(val_labels)})")
        if max(idx) >= len(names) or min(idx) < 0:
            sys.exit(f"{path}: image index {max(idx)} outside the {len(names)} training images")
        right = 0
        for r, i in enumerate(idx):
            row = p[r * k : (r + 1) * k]
            right += argmax(row) == labels[i]
            counts[i] += 1
            probs[i] = row if probs[i] is None else [a + b for a, b in zip(probs[i], row)]
        vright = sum(argmax(vp[j * k : (j + 1) * k]) == y for j, y in enumerate(val_labels))
        for j in range(len(vp)):
            val_sum[j] += vp[j]
        print(f"{path}: fold {meta.get('fold')}: held out {len(idx)}, right {right / len(idx):.4f}; val {vright / len(val_labels):.4f}")
    missing = [names[i] for i, p in enumerate(probs) if p is None]
    if missing:
        sys.exit(f"{len(missing)} training images have no out-of-fold scores, e.g. {missing[0]}")
    if min(counts) != max(counts):
        sys.exit(f"images are held out {min(counts)} to {max(counts)} times: give whole runs of folds")
    runs = counts[0]
    probs = [[v / runs for v in p] for p in probs]
    oof = sum(argmax(p) == y for p, y in zip(probs, labels)) / len(labels)
    top = sum(max(p) for p in probs) / len(probs)
    ens = sum(argmax(val_sum[j * k : (j + 1) * k]) == y for j, y in enumerate(val_labels)) / len(val_labels)
    print(f"out-of-fold accuracy on train {oof:.4f}, mean top probability {top:.3f}; folds averaged on val {ens:.4f}")
    flat = array("f")
    for p in probs:
        flat.extend(p)
    if sys.byteorder != "little":
        flat.byteswap()
    raw = flat.tobytes()
    meta = {
        "architecture": "teacher_table",
        "classes": json.dumps(CLASSES, separators=(",", ":")),
        "images": json.dumps(names, separators=(",", ":")),
        "name": f"out-of-fold teacher ({len(folds)} fold nets in {runs} runs, {oof:.1%} on train held out, val {ens:.1%})",
        "flip_average": "true",
    }
    header = {"__metadata__": meta, "probs": {"dtype": "F32", "shape": [len(probs), k], "data_offsets": [0, len(raw)]}}
    hj = json.dumps(header).encode()
    hj += b" " * ((8 - len(hj) % 8) % 8)
    with open(out, "wb") as f:
        f.write(struct.pack("<Q", len(hj)) + hj + raw)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

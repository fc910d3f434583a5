#!/usr/bin/env python3
"""Train a wide VGG *teacher* for emocam on a GPU with PyTorch, saved in emocam's `vgg` layout.

The teacher is never shipped: it only supplies soft targets (`emocam train --teacher FILE`) to the
small net that is trained with emocam itself. Its weights load in emocam unchanged, so its
accuracy is checked with `emocam eval`, not with this script's own figures.

Data: `PACKDIR/{train,val}.pack`, each record `u8 class, u32 length (little endian), JPEG bytes`,
classes in emocam's order (angry, disgust, fear, happy, sad, surprise, neutral).

    python3 train_teacher.py PACKDIR OUTDIR --name a --widths 64,128,256,512 --seed 1 \
        --max-epochs 140 --budget 5000

With `--folds K --fold I` it trains on all but the I-th K-th of the training images (split by
`--split-seed`, the same for every fold) and also writes `NAME.oof.safetensors`: its last epoch's
scores of the held-out images and of val, each averaged with the mirror image. `oof_table.py`
merges the K folds (or several runs of them) into one teacher table for `emocam train --teacher`.
`--deadline S` fits the cosine schedule on the third epoch so that the run ends within S seconds.

(the commands of the teachers are in weights/README.md and in each file's metadata; three ran
side by side on one H200 in about 6 minutes, or 3.5 minutes for 80 epochs with `--mixup`). `--budget` alone fits the epoch count to a time budget measured on the first
epoch, which includes cuDNN's warm-up and so undercounts by about 4x; fix `--max-epochs` instead.
"""
import argparse
import io
import json
import math
import struct
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def load_pack(path):
    buf = open(path, "rb").read()
    i, blobs, labels = 0, [], []
    while i < len(buf):
        lab, n = struct.unpack_from("<BI", buf, i)
        i += 5
        blobs.append(buf[i : i + n])
        labels.append(lab)
        i += n

    def dec(b):
        im = Image.open(io.BytesIO(b)).convert("L")
        if im.size != (48, 48):
            im = im.resize((48, 48), Image.BILINEAR)
        return np.asarray(im, dtype=np.uint8)

    with ThreadPoolExecutor(4) as ex:
        imgs = list(ex.map(dec, blobs))
    x = torch.from_numpy(np.stack(imgs)).float().div(127.5).sub(1.0).unsqueeze(1)
    return x, torch.tensor(labels, dtype=torch.long)


class ConvBnRelu(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-5)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class Vgg(nn.Module):
    """emocam's `vgg`: per block two conv-bn-relu, 2x2 max-pool; dense + ReLU; dense."""

    def __init__(self, widths, dense, drop_block, drop_head):
        super().__init__()
        blocks, cin = [], 1
        for w in widths:
            blocks.append(nn.ModuleList([ConvBnRelu(cin, w), ConvBnRelu(w, w)]))
            cin = w
        self.blocks = nn.ModuleList(blocks)
        side = 48 >> len(widths)
        self.fc1 = nn.Linear(cin * side * side, dense)
        self.fc2 = nn.Linear(dense, len(CLASSES))
        self.drop_block, self.drop_head = drop_block, drop_head

    def forward(self, x):
        for c1, c2 in self.blocks:
            x = F.max_pool2d(c2(c1(x)), 2)
            x = F.dropout(x, self.drop_block, self.training)
        x = F.dropout(F.relu(self.fc1(x.flatten(1))), self.drop_head, self.training)
        return self.fc2(x)


def augment(x, g):
    """Flip, rotate +-15 deg, scale +-15%, shift +-10%, contrast/brightness, random erasing."""
    b, dev = x.shape[0], x.device

    def u(*shape):
        return torch.rand(*shape, device=dev, generator=g) * 2 - 1

    flip = torch.rand(b, device=dev, generator=g) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    ang = u(b) * math.radians(15)
    sc = 1 + u(b) * 0.15
    tx, ty = u(b) * 0.2, u(b) * 0.2
    cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    c = 1 + u(b, 1, 1, 1) * 0.3
    m = x.mean(dim=(2, 3), keepdim=True)
    x = ((x - m) * c + m + u(b, 1, 1, 1) * 0.2).clamp(-1, 1)
    erase = torch.rand(b, device=dev, generator=g) < 0.5
    area = torch.rand(b, device=dev, generator=g) * 0.2 + 0.05
    ratio = torch.exp(u(b) * math.log(2))
    h = (torch.sqrt(area * ratio) * 48).clamp(4, 40)
    w = (torch.sqrt(area / ratio) * 48).clamp(4, 40)
    cy = torch.rand(b, device=dev, generator=g) * 48
    cx = torch.rand(b, device=dev, generator=g) * 48
    yy = torch.arange(48, device=dev).view(1, 48, 1).float()
    xx = torch.arange(48, device=dev).view(1, 1, 48).float()
    mask = (
        ((yy - cy.view(b, 1, 1)).abs() < h.view(b, 1, 1) / 2)
        & ((xx - cx.view(b, 1, 1)).abs() < w.view(b, 1, 1) / 2)
        & erase.view(b, 1, 1)
    )
    return torch.where(mask[:, None], u(b, 1, 1, 1).expand_as(x), x)


@torch.no_grad()
def evaluate(model, x, y, bs=1024, amp=True):
    model.eval()
    correct = correct_tta = 0
    for i in range(0, len(x), bs):
        xb, yb = x[i : i + bs], y[i : i + bs]
        with torch.autocast(xb.device.type, dtype=torch.bfloat16, enabled=amp):
            p = model(xb).float().softmax(1)
            pf = model(xb.flip(3)).float().softmax(1)
        correct += (p.argmax(1) == yb).sum().item()
        correct_tta += ((p + pf).argmax(1) == yb).sum().item()
    model.train()
    return correct / len(x), correct_tta / len(x)


@torch.no_grad()
def mirror_probs(model, x, bs=1024):
    model.eval()
    out = [
        (model(x[i : i + bs]).softmax(1) + model(x[i : i + bs].flip(3)).softmax(1)) / 2
        for i in range(0, len(x), bs)
    ]
    model.train()
    return torch.cat(out).float()


def stored_as_f16(t):
    """Big weight matrices go to the file as F16 (the device returns files of at most 16 MB)."""
    return t.numel() > 65536


def tensors_for_emocam(model):
    t = {}
    for i, (c1, c2) in enumerate(model.blocks):
        for j, cbr in ((1, c1), (2, c2)):
            p = f"block{i + 1}"
            t[f"{p}.conv{j}.weight"] = cbr.conv.weight
            t[f"{p}.bn{j}.weight"] = cbr.bn.weight
            t[f"{p}.bn{j}.bias"] = cbr.bn.bias
            t[f"{p}.bn{j}.running_mean"] = cbr.bn.running_mean
            t[f"{p}.bn{j}.running_var"] = cbr.bn.running_var
    for k in ("fc1", "fc2"):
        t[f"head.{k}.weight"] = getattr(model, k).weight
        t[f"head.{k}.bias"] = getattr(model, k).bias
    return t


def save_safetensors(path, tensors, meta, half_ok=True):
    """Tensors as F32 (I64 stays I64), except those `stored_as_f16` where `half_ok`."""
    header, blobs, off = {"__metadata__": meta}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu()
        if t.dtype == torch.int64:
            raw, dtype = t.numpy().astype("<i8").tobytes(), "I64"
        else:
            t = t.float()
            half = half_ok and stored_as_f16(t)
            arr = t.half().numpy() if half else t.numpy()
            raw, dtype = arr.astype("<f2" if half else "<f4").tobytes(), "F16" if half else "F32"
        header[name] = {
            "dtype": dtype,
            "shape": list(t.shape),
            "data_offsets": [off, off + len(raw)],
        }
        blobs.append(raw)
        off += len(raw)
    hj = json.dumps(header).encode()
    hj += b" " * ((8 - len(hj) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for raw in blobs:
            f.write(raw)


def round_to_saved(model):
    """Make the in-memory weights what the file holds, so the reported accuracy is the file's."""
    with torch.no_grad():
        for t in tensors_for_emocam(model).values():
            if stored_as_f16(t):
                t.copy_(t.half().float())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("packdir")
    ap.add_argument("outdir")
    ap.add_argument("--name", default="a")
    ap.add_argument("--widths", default="64,128,256,512")
    ap.add_argument("--dense", type=int, default=512)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--budget", type=float, default=360, help="seconds of training")
    ap.add_argument("--max-epochs", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--wd", type=float, default=5e-4)
    ap.add_argument("--drop-block", type=float, default=0.1)
    ap.add_argument("--drop-head", type=float, default=0.5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--mixup", type=float, default=0.0, help="mixup alpha (0: off)")
    ap.add_argument("--limit", type=int, default=0, help="use only N training images (smoke test)")
    ap.add_argument("--folds", type=int, default=0, help="K: train on all but one K-th of the images")
    ap.add_argument("--fold", type=int, default=0, help="which K-th (0..K-1) is held out")
    ap.add_argument("--split-seed", type=int, default=12345, help="same for every fold of a run")
    ap.add_argument("--deadline", type=float, default=0, help="stop early after this many seconds")
    a = ap.parse_args()
    if a.folds and not (a.folds >= 2 and 0 <= a.fold < a.folds):
        ap.error(f"--fold {a.fold} of --folds {a.folds}: expected 2 or more folds and 0 <= fold < folds")
    if a.folds and a.limit:
        ap.error("--limit with --folds: the held-out images would not be the pack's")
    widths = [int(w) for w in a.widths.split(",")]
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    amp = dev == "cuda"
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    torch.backends.cudnn.benchmark = True
    log = open(f"{a.outdir}/{a.name}.log", "w")

    def say(*s):
        line = " ".join(str(v) for v in s)
        print(f"[{a.name}] {line}", flush=True)
        log.write(line + "\n")
        log.flush()

    t0 = time.time()
    xtr, ytr = load_pack(f"{a.packdir}/train.pack")
    xva, yva = load_pack(f"{a.packdir}/val.pack")
    if a.limit:
        keep = torch.randperm(len(xtr))[: a.limit]
        xtr, ytr = xtr[keep], ytr[keep]
    held = None
    if a.folds:
        # Out-of-fold: the held-out images get scores from a teacher that never trained on them,
        # as confident as it is on new faces (a teacher's scores of its own training images are
        # far too sure to teach anything beyond the labels).
        order = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(a.split_seed))
        held = order[a.fold :: a.folds].sort().values
        keep = torch.ones(len(xtr), dtype=torch.bool)
        keep[held] = False
        xheld = xtr[held]
        xtr, ytr = xtr[keep], ytr[keep]
    xtr, ytr, xva, yva = xtr.to(dev), ytr.to(dev), xva.to(dev), yva.to(dev)
    if held is not None:
        xheld = xheld.to(dev)
    say(f"data: train {len(xtr)} val {len(xva)} on {dev} in {time.time() - t0:.1f}s")

    model = Vgg(widths, a.dense, a.drop_block, a.drop_head).to(dev)
    if dev == "cuda":
        model = model.to(memory_format=torch.channels_last)
    decay = [p for n, p in model.named_parameters() if p.dim() > 1]
    rest = [p for n, p in model.named_parameters() if p.dim() <= 1]
    opt = torch.optim.SGD(
        [{"params": decay, "weight_decay": a.wd}, {"params": rest, "weight_decay": 0}],
        lr=a.lr,
        momentum=0.9,
        nesterov=True,
    )
    g = torch.Generator(device=dev)
    g.manual_seed(a.seed)
    n, bs = len(xtr), a.batch_size
    spe = n // bs
    epochs = a.max_epochs
    best, best_state, step = -1.0, None, 0
    t_train = time.time()
    for epoch in range(1, a.max_epochs + 1):
        if epoch > epochs:
            break
        te = time.time()
        perm = torch.randperm(n, device=dev, generator=g)
        tot_loss = torch.zeros((), device=dev)
        for s in range(spe):
            total = epochs * spe
            warm = a.warmup * spe
            if step < warm:
                lr = a.lr * (step + 1) / warm
            else:
                lr = 0.5 * a.lr * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
            for grp in opt.param_groups:
                grp["lr"] = lr
            idx = perm[s * bs : (s + 1) * bs]
            xb = augment(xtr[idx], g)
            if dev == "cuda":
                xb = xb.contiguous(memory_format=torch.channels_last)
            yb = ytr[idx]
            if a.mixup > 0:
                # Mixup: softer, better calibrated outputs on the images the teacher trains on.
                lam = float(np.random.beta(a.mixup, a.mixup))
                other = torch.randperm(len(idx), device=dev, generator=g)
                xb = lam * xb + (1 - lam) * xb[other]
            with torch.autocast(dev, dtype=torch.bfloat16, enabled=amp):
                out = model(xb)
            loss = F.cross_entropy(out.float(), yb)
            if a.mixup > 0:
                loss = lam * loss + (1 - lam) * F.cross_entropy(out.float(), yb[other])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot_loss += loss.detach()
            step += 1
        acc, acc_tta = evaluate(model, xva, yva, amp=amp)
        dt = time.time() - te
        if epoch == 1:
            # Fit the cosine schedule to the time budget, measured on the first epoch.
            epochs = max(3, min(a.max_epochs, int(a.budget / (dt * 1.03))))
            say(f"epoch takes {dt:.2f}s: training {epochs} epochs")
        if a.deadline and epoch == 3:
            # Fit the cosine schedule to the deadline on the third epoch, after cuDNN's warm-up.
            left = a.deadline - (time.time() - t0) - 20
            epochs = max(epoch + 1, min(epochs, epoch + int(left / (dt * 1.05))))
            say(f"epoch takes {dt:.2f}s: training {epochs} epochs to meet the deadline")
        if a.deadline and time.time() - t0 + 1.5 * dt > a.deadline:
            say(f"deadline: stopping after epoch {epoch} of {epochs}")
            epochs = epoch
        if acc_tta > best:
            best = acc_tta
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        say(
            f"epoch {epoch}/{epochs} lr {lr:.4f} loss {tot_loss.item() / spe:.4f} "
            f"val {acc:.4f} val_tta {acc_tta:.4f} ({dt:.1f}s)"
        )
    last_epoch = min(epoch, epochs)
    with torch.no_grad():
        model.eval()
        top = torch.cat([model(xtr[i : i + 1024]).float().softmax(1).amax(1) for i in range(0, n, 1024)])
        model.train()
    say(f"mean top probability on the training images: {top.mean().item():.3f}")
    wall = time.time() - t_train
    last_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for tag, state in (("last", None), ("best", best_state)):
        if state is not None:
            model.load_state_dict(state)
        round_to_saved(model)
        acc, acc_tta = evaluate(model.float(), xva, yva, amp=False)
        meta = {
            "architecture": "vgg",
            "input_size": "48",
            "input_scaling": "minus_one_to_one",
            "classes": json.dumps(CLASSES, separators=(",", ":")),
            "bn_eps": "0.00001",
            "flip_average": "false",
            "vgg_widths": a.widths,
            "vgg_dense": str(a.dense),
            "name": f"teacher vgg {a.widths.replace(',', '-')} ({tag}, val {100 * acc:.1f}%)",
            "train_command": "python3 train_teacher.py " + " ".join(sys.argv[1:]),
            "train_tool": f"PyTorch {torch.__version__} on {torch.cuda.get_device_name() if amp else 'cpu'}",
            "train_epochs": str(last_epoch),
            "train_wall_seconds": f"{wall:.0f}",
            "val_acc_pytorch": f"{acc:.4f}",
            "val_acc_tta_pytorch": f"{acc_tta:.4f}",
        }
        save_safetensors(f"{a.outdir}/{a.name}.{tag}.safetensors", tensors_for_emocam(model), meta)
        say(f"saved {tag}: val {acc:.4f} val_tta {acc_tta:.4f} (fp32, weights as saved)")
    if held is not None:
        # The last epoch's net (not the one picked on val) scores the held-out images and val,
        # each averaged with its mirror image as `emocam train --teacher` does.
        model.load_state_dict(last_state)
        round_to_saved(model)
        probs = {"index": held.to(torch.int64)}
        for key, x in (("probs", xheld), ("val_probs", xva)):
            probs[key] = mirror_probs(model.float(), x)
        save_safetensors(f"{a.outdir}/{a.name}.oof.safetensors", probs, {"folds": str(a.folds), "fold": str(a.fold)}, half_ok=False)
        say(f"saved out-of-fold scores of {len(held)} held-out images")
    say(f"done: {last_epoch} epochs in {wall:.0f}s")


if __name__ == "__main__":
    main()

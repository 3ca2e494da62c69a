"""Sanity checks of the synthfaces world with small CNNs (GPU recommended, CPU works).

    python -m cfbench.datasets.synthfaces.check --train 100000 --test 10000 --size 64

1. *Attributes are learnable*: a small CNN trained on the train split predicts each of
   the 14 attributes on the test split; prints accuracy per attribute and the share
   of the majority class (what a constant guess gets).
2. *Identity is recognisable under attribute changes*: a CNN is trained to classify
   the people of a train-split prefix from some of their images, then its embedding
   is read on held-out images of the same people (other attributes, pose, light):
   prints top-1 accuracy and the mean cosine similarity of same- and different-person
   pairs.

These are checks of the world, not the project's classifiers or identity encoders.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import numpy as np
import torch
from torch import nn

from cfbench.datasets.synthfaces.dataset import IDENTITY_BLOCK, SynthFaces
from cfbench.datasets.synthfaces.spec import ATTRIBUTES


def _render_chunk(job: tuple[int, str, int, int]) -> np.ndarray:
    size, split, start, stop = job
    torch.set_num_threads(1)
    _, images, _ = SynthFaces(image_size=size).split(split).batch(range(start, stop))
    return (images * 255).round().to(torch.uint8).numpy()


def render_range(size: int, split: str, n: int, workers: int) -> torch.Tensor:
    """Images [0, n) of a split as a uint8 tensor (n, 3, size, size), rendered in parallel."""
    jobs = [(size, split, s, min(s + 512, n)) for s in range(0, n, 512)]
    if workers <= 1:
        return torch.from_numpy(np.concatenate([_render_chunk(j) for j in jobs]))
    with mp.get_context("fork").Pool(workers) as pool:
        return torch.from_numpy(np.concatenate(pool.map(_render_chunk, jobs)))


def small_cnn(outputs: int, width: int = 32) -> nn.Sequential:
    def block(i, o):
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True),
                             nn.Conv2d(o, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True),
                             nn.MaxPool2d(2))
    w = width
    return nn.Sequential(block(3, w), block(w, 2 * w), block(2 * w, 4 * w), block(4 * w, 8 * w),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8 * w, outputs))


def _fit(model, x, y, loss_fn, epochs, device, batch=256, lr=2e-3):
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(x) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), batch):
            j = perm[i : i + batch]
            xb = x[j].to(device, non_blocking=True).float() / 255.0
            loss = loss_fn(model(xb), y[j].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


@torch.no_grad()
def _predict(model, x, device, batch=1024):
    return torch.cat([model(x[i : i + batch].to(device).float() / 255.0).cpu() for i in range(0, len(x), batch)])


def attribute_check(size, n_train, n_test, epochs, device, workers) -> dict[str, float]:
    ds = SynthFaces(image_size=size, sizes={"train": max(n_train, 1), "test": max(n_test, 1)})
    t0 = time.time()
    x_tr, x_te = render_range(size, "train", n_train, workers), render_range(size, "test", n_test, workers)
    y_tr, y_te = ds.split("train").labels(range(n_train)), ds.split("test").labels(range(n_test))
    print(f"rendered {n_train + n_test} images in {time.time() - t0:.1f} s")
    t0 = time.time()
    model = _fit(small_cnn(len(ATTRIBUTES)), x_tr, y_tr, nn.BCEWithLogitsLoss(), epochs, device)
    acc = ((_predict(model, x_te, device) > 0).float() == y_te).float().mean(0)
    print(f"trained in {time.time() - t0:.1f} s; test accuracy per attribute (majority-class share):")
    result = {}
    for k, a in enumerate(ATTRIBUTES):
        p = float(y_te[:, k].mean())
        result[a] = float(acc[k])
        print(f"  {a:20s} {100 * acc[k]:6.2f} %   ({100 * max(p, 1 - p):5.1f} %)")
    return result


def identity_check(size, n_people, epochs, device, workers) -> dict[str, float]:
    ds = SynthFaces(image_size=size)
    split = ds.split("train")
    k = split.images_per_identity
    n = (n_people // IDENTITY_BLOCK) * IDENTITY_BLOCK * k
    ids = split.identity_ids(range(n))
    _, people = np.unique(ids, return_inverse=True)
    x = render_range(size, "train", n, workers)
    shot = (np.arange(n) // IDENTITY_BLOCK) % k  # which of the person's k images this is
    tr, te = shot < k - 2, shot >= k - 2
    y = torch.from_numpy(people)
    model = _fit(small_cnn(int(people.max()) + 1, width=48), x[tr], y[tr], nn.CrossEntropyLoss(label_smoothing=0.1),
                 epochs, device)
    logits = _predict(model, x[te], device)
    top1 = float((logits.argmax(1) == y[te]).float().mean())
    # embeddings: penultimate features, centred on the training images' mean, unit length
    centre = _predict(model[:-1], x[tr][:4096], device).mean(0)
    emb = torch.nn.functional.normalize(_predict(model[:-1], x[te], device) - centre, dim=1)
    sim = emb @ emb.T
    same = y[te][:, None] == y[te][None, :]
    off = ~torch.eye(len(emb), dtype=torch.bool)
    s_same, s_diff = float(sim[same & off].mean()), float(sim[~same].mean())
    frac_same = float((sim[same & off] > 0.5).float().mean())
    frac_diff = float((sim[~same] > 0.5).float().mean())
    print(f"identity: {int(people.max()) + 1} people, {int(tr.sum())} train / {int(te.sum())} held-out images")
    print(f"  top-1 on held-out images {100 * top1:.2f} %")
    print(f"  cosine same person {s_same:.3f} (share > 0.5: {100 * frac_same:.1f} %), "
          f"different people {s_diff:.3f} (share > 0.5: {100 * frac_diff:.2f} %)")
    return {"top1": top1, "cos_same": s_same, "cos_diff": s_diff}


def main() -> None:
    ap = argparse.ArgumentParser(description="Sanity checks of the synthfaces world")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--train", type=int, default=100_000)
    ap.add_argument("--test", type=int, default=10_000)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--people", type=int, default=2048)
    ap.add_argument("--id-epochs", type=int, default=30)
    ap.add_argument("--workers", type=int, default=max(1, (mp.cpu_count() or 2) - 1))
    ap.add_argument("--skip-identity", action="store_true")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    attribute_check(args.size, args.train, args.test, args.epochs, device, args.workers)
    if not args.skip_identity:
        identity_check(args.size, args.people, args.id_epochs, device, args.workers)


if __name__ == "__main__":
    main()

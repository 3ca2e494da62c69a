"""Your own classifier on your own images: `--dataset imagefolder:PATH` with a labels CSV,
and `--classifier` as a TorchScript file, a `module:factory` or a classifier file, with
its input range, output index and resolution declared (`--classifier-opt`).

Runs end to end through the CLI (PGD, n=4, 32 px), the factory one as a real
subprocess with the module on PYTHONPATH; every bad piece is one error line, raised
before anything is written.
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from tests.conftest import PGD_SETS, REPO, assert_one_error_line, invoke, only_run_dir, run_subprocess

#: flat colours: (r, g, b) in 0..255 and the labels Bright (mean > 127), Red (red dominates)
COLOURS = [((230, 220, 210), 1, 0), ((30, 40, 20), 0, 0), ((200, 60, 40), 0, 1), ((250, 200, 190), 1, 1),
           ((60, 70, 200), 0, 0), ((180, 190, 240), 1, 0)]  # fmt: skip


class BrightRed(nn.Module):
    """Two logits per image from inputs in [-1, 1]: (Bright, Red)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bright = 20.0 * x.mean(dim=(1, 2, 3))
        red = 20.0 * (x[:, 0] - x[:, 1:].max(dim=1).values).mean(dim=(1, 2))
        return torch.stack([bright, red], dim=1)


FACTORY_MODULE = '''
import torch
from torch import nn


class Bright(nn.Module):
    """One logit for Bright, inputs in [0, 1]."""

    def forward(self, x):
        return 40.0 * (x.mean(dim=(1, 2, 3)) - 0.5)


class Grid(nn.Module):
    def forward(self, x):
        return x[:, 0]  # (N, H, W): not one logit per image


def make(attribute):
    assert attribute == "Bright", attribute
    return Bright()


def broken(attribute):
    raise RuntimeError("no weights for " + attribute)


def grid():
    return Grid()


def not_a_network(attribute):
    return 42
'''


def image_folder(root: Path, split: bool = False) -> Path:
    """A folder of 40x30 PNGs (centre-cropped to square on loading), one in a subfolder,
    with labels.csv."""
    folder = root / "myimages"
    (folder / "sub").mkdir(parents=True)
    rows = ["image,Bright,Red" + (",split" if split else "")]
    rng = np.random.default_rng(0)
    for k, (rgb, bright, red) in enumerate(COLOURS):
        pixels = np.clip(np.array(rgb)[None, None] + rng.integers(-8, 9, (30, 40, 3)), 0, 255).astype(np.uint8)
        name = f"sub/img{k}.png" if k == 0 else f"img{k}.png"
        Image.fromarray(pixels).save(folder / name)
        rows.append(f"{name},{bright},{red}" + (",train" if split and k == 5 else ",test" if split else ""))
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.fixture
def own(workdir: Path) -> dict[str, Path | str]:
    """In the test's cwd: the image folder, a TorchScript classifier and a factory module."""
    folder = image_folder(workdir)
    script = workdir / "brightred.pt"
    torch.jit.save(torch.jit.script(BrightRed()), str(script))
    module = f"ownnets_{uuid.uuid4().hex[:8]}"  # one per test: sys.modules keeps what a test imported
    (workdir / f"{module}.py").write_text(FACTORY_MODULE)
    return {"folder": folder, "script": script, "module": module}


def run_args(folder: Path, *extra: str, attr: str = "Bright") -> list[str]:
    return ["run", "--method", "pgd", "--dataset", f"imagefolder:{folder}", "--attr", attr, "--n", "4",
            "--no-progress", "--device", "cpu", *PGD_SETS, *extra]  # fmt: skip


def check_finished(runs: Path) -> dict:
    run_dir = only_run_dir(runs)
    assert run_dir.parent.name == "imagefolder-myimages_Bright"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics) == {"fr", "fr_null", "l1", "l2"}  # imagefolder's default protocol: cfbench-v1
    assert isinstance(metrics["fr"]["value"], float) and metrics["fr"]["value"] > 50
    assert sorted(p.name for p in (run_dir / "originals").glob("*.png")) == ["img1.png", "img2.png", "img3.png",
                                                                            "sub__img0.png"]  # fmt: skip
    assert Image.open(run_dir / "originals" / "sub__img0.png").size == (32, 32)
    return json.loads((run_dir / "run.json").read_text())


def test_torchscript_classifier_on_image_folder(own):
    """A 2-output TorchScript network on [-1, 1] inputs, index and range declared on the
    command line; the folder takes the classifier's declared resolution."""
    opts = ["--classifier-opt", "range=-1,1", "--classifier-opt", "index=0", "--classifier-opt", "resolution=32"]
    result = invoke(*run_args(own["folder"], "--classifier", "brightred.pt", *opts))
    assert result.exit_code == 0, result.output + repr(result.exception)
    info = check_finished(Path("runs"))
    assert info["identity"]["classifier"] == "brightred.pt [range=-1,1 index=0 resolution=32]"
    assert info["identity"]["dataset"] == "imagefolder-myimages"
    assert info["identity"]["dataset_source"]["resolution"] == 32


def test_factory_classifier_as_subprocess(own, workdir):
    """`module:factory` from PYTHONPATH, run as a user runs it; a YAML/JSON classifier file
    declares the same as options do."""
    elsewhere = workdir / "elsewhere"
    elsewhere.mkdir()
    done = run_subprocess(*run_args(own["folder"], "--classifier", f"{own['module']}:make",
                                    "--classifier-opt", "resolution=32"),
                          cwd=elsewhere, PYTHONPATH=os.pathsep.join([str(workdir), str(REPO)]))  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    check_finished(elsewhere / "runs")

    from cfbench.classifiers import parse_classifier

    (workdir / "clf.json").write_text(json.dumps({"path": "brightred.pt", "range": [-1, 1], "index": 0}))
    (workdir / "clf.yaml").write_text(f"factory: {own['module']}:make\nresolution: 32\n")
    spec = parse_classifier(str(workdir / "clf.json"))
    assert (spec.kind, Path(spec.target), spec.low, spec.high, spec.index) == ("torchscript", own["script"], -1, 1, 0)
    spec = parse_classifier(str(workdir / "clf.yaml"), {"resolution": "48"})  # the command line wins
    assert (spec.kind, spec.target, spec.resolution) == ("factory", f"{own['module']}:make", 48)


def test_softmax_pair_and_yaml_file(own, workdir):
    """logits=2: logit = l[1] - l[0]; index=0 names class 0 as the attribute."""
    from cfbench.classifiers import load_classifier

    x = torch.rand(3, 3, 32, 32)
    pair = workdir / "pair.pt"
    torch.jit.save(torch.jit.script(BrightRed()), str(pair))
    reference = BrightRed()(x * 2 - 1)
    net = load_classifier(str(pair), "Bright", {"logits": "2", "range": "-1,1"}, image_size=32)
    assert torch.allclose(net(x), reference[:, 1] - reference[:, 0])
    (workdir / "pair.yaml").write_text("path: pair.pt\nrange: -1,1\nlogits: 2\nindex: 0\n")
    net = load_classifier(str(workdir / "pair.yaml"), "Bright", image_size=32)
    assert torch.allclose(net(x), reference[:, 0] - reference[:, 1])


def _pickle(workdir: Path) -> None:
    torch.save(BrightRed().state_dict(), workdir / "weights.pt")  # a pickle, never loaded


ERRORS = [  # (id, --classifier and options, expected in the error line)
    ("no-module", ["--classifier", "no_such_module_xyz:make"], "no module named 'no_such_module_xyz'"),
    ("no-attr", ["--classifier", "{module}:nothing"], "has no 'nothing'"),
    ("factory-raises", ["--classifier", "{module}:broken"],
     "broken('Bright') raised RuntimeError: no weights for Bright"),
    ("not-a-module", ["--classifier", "{module}:not_a_network"], "returned a int, not a torch.nn.Module"),
    ("bad-output", ["--classifier", "{module}:grid"], "returns shape (2, 32, 32) for 2 images, not (N,) or (N, K)"),
    ("not-torchscript", ["--classifier", "weights.pt"], "is not a TorchScript file"),
    ("no-file", ["--classifier", "missing.pt"], "missing.pt does not exist"),
    ("no-index", ["--classifier", "brightred.pt"], "returns 2 outputs per image: declare the query's with"),
    ("index-out-of-range", ["--classifier", "brightred.pt", "--classifier-opt", "index=5"],
     "index 5 is out of range for its 2 outputs (0…1)"),
    ("bad-option", ["--classifier", "brightred.pt", "--classifier-opt", "scale=2"],
     "unknown classifier option 'scale'"),
    ("bad-range", ["--classifier", "brightred.pt", "--classifier-opt", "range=1,-1"], "LOW must be below HIGH"),
    ("registered-with-opts", ["--classifier", "toy-bright", "--classifier-opt", "index=0"],
     "the registered 'toy-bright' already takes"),
    ("no-classifier", [], "has no default classifier for Bright; pass --classifier"),
    ("v3-needs-networks", ["--classifier", "{module}:make", "--protocol", "cfbench-v3"],
     "needs a features network, which imagefolder:"),
    ("bad-classifier-file", ["--classifier", "clf.yaml"], "give one of path (a TorchScript file) or factory"),
]  # fmt: skip


@pytest.mark.parametrize("args,message", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_classifier_errors_are_one_line(own, workdir, args, message):
    _pickle(workdir)
    (workdir / "clf.yaml").write_text("range: -1,1\n")
    args = [a.format(module=own["module"]) for a in args]
    if "--classifier" in args:
        args += ["--classifier-opt", "resolution=32"]
    result = invoke(*run_args(own["folder"], *args))
    line = assert_one_error_line(result.stderr, result.output)
    assert message in line, line
    assert not (workdir / "runs").exists()  # refused before anything is written


def _no_csv(folder: Path) -> None:
    (folder / "labels.csv").unlink()


def _no_image(folder: Path) -> None:
    (folder / "img3.png").unlink()


def _bad_label(folder: Path) -> None:
    (folder / "labels.csv").write_text("image,Bright\nimg1.png,yes\n")


@pytest.mark.parametrize("dataset,setup,message", [
    ("imagefolder:{root}/nowhere", None, "folder {root}/nowhere does not exist"),
    ("imagefolder:{folder}", _no_csv, "{folder}/labels.csv does not exist"),
    ("imagefolder:{folder}", _no_image, "image {folder}/img3.png (labels.csv line 5) does not exist"),
    ("imagefolder:{folder}", _bad_label, "line 2, column Bright: 'yes' is not a 0/1 label"),
    ("imagefolder", None, "--dataset imagefolder needs a folder: --dataset imagefolder:PATH"),
], ids=["no-folder", "no-csv", "no-image", "bad-label", "no-path"])  # fmt: skip
def test_dataset_errors_are_one_line(own, workdir, dataset, setup, message):
    folder = own["folder"]
    if setup:
        setup(folder)
    dataset = dataset.format(root=workdir, folder=folder)
    args = run_args(folder, "--classifier", f"{own['module']}:make")
    args[args.index("--dataset") + 1] = dataset
    line = assert_one_error_line(invoke(*args).stderr)
    assert message.format(root=workdir, folder=folder) in line, line
    assert not (workdir / "runs").exists()


def test_split_column_and_resolution_file(workdir):
    """With a `split` column the evaluation split is the test rows; dataset.json sets the
    resolution (the classifier's declared one is then only its own input size)."""
    from cfbench.datasets import get_dataset, resolve_attribute

    folder = image_folder(workdir, split=True)
    ds = get_dataset(f"imagefolder:{folder}", resolution=32)
    assert ds.protocol == "cfbench-v1" and ds.image_size == 32 and resolve_attribute(ds, "Red") == "Red"
    test, train = ds.split("test"), ds.split("train")
    assert (len(test), len(train), len(ds.split("val"))) == (5, 1, 0)
    ids, images, labels = test.batch([0, 1])
    assert ids == ["sub__img0", "img1"] and images.shape == (2, 3, 32, 32) and labels.tolist() == [[1, 0], [0, 0]]
    assert 0 <= images.min() and images.max() <= 1
    assert train.labels([0]).tolist() == [[1.0, 0.0]] and ds.split("val").labels([]).shape == (0, 2)
    (folder / "dataset.json").write_text('{"resolution": 24}')
    assert get_dataset(f"imagefolder:{folder}", resolution=32).split("test")[0].image.shape == (3, 24, 24)

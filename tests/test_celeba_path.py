"""The real-data path: the `celeba` / `celebahq` datasets read from tiny folders in the
published layouts (both CelebA annotation formats), DiME's mini-val, the published
classifiers (DiME's DenseNet-121 and STEEX's DecisionDensenet) round-tripped through
their containers, one-line errors for a wrong or missing file, and `cfbench run` end to
end on CelebA with a random-weight classifier in the weights cache."""
from __future__ import annotations

import json
import math
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision import transforms
from torchvision.models import densenet121
from torchvision.models.vgg import cfgs, make_layers

from cfbench.classifiers import CLASSIFIERS, load_classifier
from cfbench.datasets import get_dataset
from cfbench.datasets.celeba import CelebA, CelebAHQ, minival_rows, repeat_ids
from cfbench.errors import CfbenchError
from cfbench.oracles.celeba_oracle import CELEBA_ATTRIBUTES
from cfbench.published_classifiers import describe_checkpoint
from cfbench.weights import WEIGHTS
from tests.conftest import invoke, only_run_dir
from tests.test_oracle_loaders import dive_oracle_container, python2_pickle, randomized

SMILING, YOUNG = CELEBA_ATTRIBUTES.index("Smiling"), CELEBA_ATTRIBUTES.index("Young")
#: partitions of the tiny CelebA: val rows (1) interleaved with train and test
CELEBA_PARTS = (0, 1, 0, 1, 2, 1, 0)
#: the tiny CelebA-HQ: HQ image k is CelebA image ORIGINALS[k]; its partitions
HQ_ORIGINALS = ("000005.jpg", "000002.jpg", "000007.jpg", "000001.jpg", "000003.jpg")


def faces(n: int) -> list[Image.Image]:
    """``n`` synthfaces renders as PIL images (64 px)."""
    from cfbench.datasets.synthfaces import SynthFaces

    _, images, _ = SynthFaces(image_size=64).split("test").batch(range(n))
    return [Image.fromarray((im.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)) for im in images]


def labels(n: int) -> np.ndarray:
    """(n, 40) labels in -1/1, Smiling alternating."""
    rng = np.random.default_rng(0)
    out = np.where(rng.random((n, 40)) < 0.5, -1, 1)
    out[:, SMILING] = [1 if i % 2 else -1 for i in range(n)]
    return out


def attr_txt(files: list[str], values: np.ndarray) -> str:
    """As list_attr_celeba.txt / CelebAMask-HQ-attribute-anno.txt: count, names, padded rows."""
    rows = [f"{f} " + " ".join(f"{v:2d}" for v in row) for f, row in zip(files, values)]
    return "\n".join([str(len(files)), " ".join(CELEBA_ATTRIBUTES) + " ", *rows]) + "\n"


def make_celeba(root: Path, fmt: str) -> Path:
    """A tiny CelebA in the published layout (``fmt``: the txt files or Kaggle's CSVs)."""
    n = len(CELEBA_PARTS)
    files = [f"{i + 1:06d}.jpg" for i in range(n)]
    (root / "img_align_celeba").mkdir(parents=True)
    for name, face in zip(files, faces(n)):
        face.resize((178, 218), Image.BICUBIC).save(root / "img_align_celeba" / name, quality=95)
    values = labels(n)
    if fmt == "txt":
        (root / "list_attr_celeba.txt").write_text(attr_txt(files, values))
        (root / "list_eval_partition.txt").write_text("".join(f"{f} {p}\n" for f, p in zip(files, CELEBA_PARTS)))
    else:
        header = ",".join(["image_id", *CELEBA_ATTRIBUTES])
        rows = [",".join([f, *map(str, row)]) for f, row in zip(files, values)]
        (root / "list_attr_celeba.csv").write_text("\n".join([header, *rows]) + "\n")
        (root / "list_eval_partition.csv").write_text(
            "image_id,partition\n" + "".join(f"{f},{p}\n" for f, p in zip(files, CELEBA_PARTS)))
    return root


def make_celebahq(root: Path) -> Path:
    """A tiny CelebAMask-HQ (PNG images under the published .jpg names' stems) with
    CelebA's partition file copied in."""
    n = len(HQ_ORIGINALS)
    (root / "CelebA-HQ-img").mkdir(parents=True)
    for k, face in enumerate(faces(n)):
        face.resize((300, 300), Image.BICUBIC).save(root / "CelebA-HQ-img" / f"{k}.png")
    (root / "CelebAMask-HQ-attribute-anno.txt").write_text(attr_txt([f"{k}.jpg" for k in range(n)], labels(n)))
    mapping = ["idx         orig_idx    orig_file"]
    mapping += [f"{k:<12d}{int(f[:6]) - 1:<12d}{f}" for k, f in enumerate(HQ_ORIGINALS)]
    (root / "CelebA-HQ-to-CelebA-mapping.txt").write_text("\n".join(mapping) + "\n")
    parts = {f"{i + 1:06d}.jpg": p for i, p in enumerate(CELEBA_PARTS)}
    (root / "list_eval_partition.txt").write_text("".join(f"{f} {p}\n" for f, p in sorted(parts.items())))
    return root


def reference(path: Path, size: int) -> torch.Tensor:
    """DiME/ACE's transform of one image file (normalize=False)."""
    with Image.open(path) as image:
        pipeline = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor()])
        return pipeline(image.convert("RGB"))


# -- datasets ------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["txt", "csv"])
def test_celeba_layouts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str) -> None:
    root = make_celeba(tmp_path / "celeba", fmt)
    monkeypatch.setenv("CFBENCH_DATA", str(tmp_path))  # the folder holding celeba/
    dataset = get_dataset("celeba")
    assert (dataset.image_size, dataset.eval_split) == (128, "val")
    assert dataset.queries == {"smile": "Smiling", "age": "Young"}
    val = dataset.split("val")
    assert val.ids == ["000002", "000004", "000006"] and len(val) == 3
    sample = val[1]
    assert sample.image.shape == (3, 128, 128) and 0 <= sample.image.min() and sample.image.max() <= 1
    torch.testing.assert_close(sample.image, reference(root / "img_align_celeba" / "000004.jpg", 128), rtol=0, atol=0)
    expected = (labels(len(CELEBA_PARTS)) == 1).astype(np.float32)
    torch.testing.assert_close(sample.labels, torch.from_numpy(expected[3]))
    train = dataset.split("train")  # CD's reference: the train partition's labels, no image read
    torch.testing.assert_close(train.labels(range(len(train))), torch.from_numpy(expected[[0, 2, 6]]))

    monkeypatch.setenv("CFBENCH_DATA", str(root))  # or the dataset's own folder
    assert CelebA().split("test").ids == ["000005"]
    assert CelebA(root=root, eval_split="test").eval_split == "test"


def test_minival_is_dimes(tmp_path: Path) -> None:
    rows = minival_rows(19867)  # the size of CelebA's val partition: DiME's utils/minival.csv
    assert len(rows) == 1000 and len(set(rows)) == 966 and rows[:5] == [8, 13, 18, 35, 58] and rows == sorted(rows)
    assert repeat_ids(["a", "b", "a", "a"]) == ["a", "b", "a_2", "a_3"]

    minival = get_dataset("celeba-minival")
    assert minival.eval_split == "minival"
    split = CelebA(root=make_celeba(tmp_path / "celeba", "txt")).split("minival")
    assert len(split) == 1000 and len(set(split.ids)) == 1000  # every row a sample of its own
    assert {i.split("_")[0] for i in split.ids} <= {"000002", "000004", "000006"}
    assert split[0].image.shape == (3, 128, 128)


def test_celebahq_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_celebahq(tmp_path / "CelebAMask-HQ")
    monkeypatch.setenv("CFBENCH_DATA", str(tmp_path))
    dataset = get_dataset("celebahq")
    assert (dataset.image_size, dataset.eval_split) == (256, "test")
    test = dataset.split("test")  # HQ 0 -> 000005.jpg, partition 2
    assert test.ids == ["0"]
    torch.testing.assert_close(test[0].image, reference(root / "CelebA-HQ-img" / "0.png", 256), rtol=0, atol=0)
    assert dataset.split("train").ids == ["2", "3", "4"] and dataset.split("val").ids == ["1"]
    assert dataset.classifiers == {"Male": "celebahq-densenet", "Smiling": "celebahq-densenet",
                                   "Young": "celebahq-densenet"}  # fmt: skip


def test_missing_files_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_celeba(tmp_path / "celeba", "txt")
    monkeypatch.setenv("CFBENCH_DATA", str(tmp_path))
    (root / "list_eval_partition.txt").unlink()
    with pytest.raises(CfbenchError) as info:
        CelebA().split("val")
    message = str(info.value)
    assert "\n" not in message and f"incomplete at {root}" in message
    assert "missing list_eval_partition.txt (or list_eval_partition.csv)" in message and "CelebA.html" in message

    (root / "list_eval_partition.txt").write_text("".join(f"{i + 1:06d}.jpg {p}\n" for i, p in enumerate(CELEBA_PARTS)))
    (root / "img_align_celeba" / "000004.jpg").unlink()
    with pytest.raises(CfbenchError, match=r"1 of the 3 images of its val split are missing from .* \(e\.g\. "
                                           r"000004\.jpg\); it is published at") as info:
        CelebA().split("val")
    assert "\n" not in str(info.value)

    monkeypatch.setenv("CFBENCH_DATA", str(tmp_path / "nothing"))
    with pytest.raises(CfbenchError, match=r"CelebAMask-HQ was not found in .*nothing/celebahq.* \(it needs "
                                           r"CelebA-HQ-img/, CelebAMask-HQ-attribute-anno\.txt"):
        CelebAHQ().split("test")


# -- the published classifiers -------------------------------------------------------------------
class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class OfficialDenseNet121(nn.Module):
    """DiME's / STEEX's ``DenseNet121`` wrapper, written as the official code does."""

    def __init__(self) -> None:
        super().__init__()
        self.feat_extract = densenet121(weights=None)
        self.feat_extract.classifier = Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feat_extract(x)


@pytest.fixture(scope="module")
def dime_classifier(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module, nn.Module]:
    """DiME's classifier.pth from random weights: ``{'feat_extract', 'classifier'}``."""
    trunk, head = randomized(OfficialDenseNet121(), 0), randomized(nn.Linear(1024, 40), 1)
    path = tmp_path_factory.mktemp("dime") / "classifier.pth"
    torch.save({"feat_extract": trunk.state_dict(), "classifier": head.state_dict()}, path)
    return path, trunk, head


def test_dime_classifier_round_trip(dime_classifier, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, trunk, head = dime_classifier
    factory = CLASSIFIERS.get("celeba-densenet121")
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        official = head(trunk((x - 0.5) / 0.5))  # ACE: Normalizer(0.5, 0.5) on [0, 1]; DiME: Normalize(0.5, 0.5)
        torch.testing.assert_close(factory("Smiling", path)(x), official[:, SMILING], rtol=0, atol=0)
    monkeypatch.setenv("CFBENCH_HOME", str(tmp_path))  # through the weights cache, by the registry file name
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / WEIGHTS["celeba-densenet121"].filename).write_bytes(path.read_bytes())
    with torch.no_grad():
        young = load_classifier("celeba-densenet121", "Young")
        torch.testing.assert_close(young(x), official[:, YOUNG], rtol=0, atol=0)
    assert factory.attributes == CELEBA_ATTRIBUTES
    assert get_dataset("celeba").classifiers["Smiling"] == "celeba-densenet121"

    # torchvision's legacy DenseNet names (norm.1, conv.2) read the same; another input size is resized to 128
    legacy = {re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", k): v for k, v in trunk.state_dict().items()}
    assert "feat_extract.features.denseblock1.denselayer1.norm.1.weight" in legacy
    torch.save({"feat_extract": legacy, "classifier": head.state_dict()}, tmp_path / "legacy.pth")
    with torch.no_grad():
        torch.testing.assert_close(factory("Smiling", tmp_path / "legacy.pth")(x), official[:, SMILING], rtol=0, atol=0)
        assert factory("Smiling", path)(torch.rand(1, 3, 64, 64)).shape == (1,)


def test_steex_classifier_round_trip(tmp_path: Path) -> None:
    model = nn.Module()
    model.feat_extract, model.classifier = OfficialDenseNet121(), nn.Linear(1024, 3)  # DecisionDensenetModel(3)
    model = randomized(model, 3)
    optimizer = torch.optim.Adam(model.classifier.parameters(), lr=1e-4)
    model.classifier(torch.randn(2, 1024)).sum().backward()
    optimizer.step()
    path = tmp_path / "checkpoint.tar"
    torch.save({"epoch": 5, "optimizer_state_dict": optimizer.state_dict(), "loss": 0.25,
                "model_state_dict": OrderedDict(model.state_dict())}, path)  # fmt: skip
    x = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        official = model.classifier(model.feat_extract((x - 0.5) / 0.5))
        loaded = CLASSIFIERS.get("celebahq-densenet")("Young", path)
        torch.testing.assert_close(loaded(x), official[:, 2], rtol=0, atol=0)
    with pytest.raises(CfbenchError, match=r"does not predict 'Bald' \(it predicts Male, Smiling, Young\)"):
        load_classifier("celebahq-densenet", "Bald")


def test_wrong_container_is_one_line(dime_classifier, tmp_path: Path) -> None:
    dime = dime_classifier[0]
    with pytest.raises(CfbenchError) as info:
        CLASSIFIERS.get("celebahq-densenet")("Smiling", dime)
    message = str(info.value)
    assert "\n" not in message
    assert "holds the DiVE/DiME CelebA DenseNet-121 classifier (celeba-densenet121, classifier.pth), not STEEX's " \
           "CelebA-HQ DecisionDensenet classifier" in message and "valeoai/STEEX/releases" in message

    oracle = tmp_path / "oracle.pth"  # the DiVE oracle's container: DAG keys and a 128-d head
    torch.save({"feat_extract": {"conv1_7x7_s2.weight": torch.zeros(64, 3, 7, 7), "feat_extract.weight":
                                 torch.zeros(128, 2048, 1, 1)}, "classifier": {"weight": torch.zeros(40, 128)}}, oracle)
    with pytest.raises(CfbenchError, match=r"holds the DiVE/DiME CelebA attribute oracle \(celeba-oracle, "
                                           r"oracle\.pth\), not the DiVE/DiME CelebA DenseNet-121 classifier"):
        CLASSIFIERS.get("celeba-densenet121")("Smiling", oracle)
    steex_oracle = tmp_path / "steex-oracle.tar"
    torch.save({"epoch": 1, "model_state_dict": {"feat_extract.conv1_7x7_s2.weight": torch.zeros(1)}}, steex_oracle)
    assert describe_checkpoint(torch.load(steex_oracle)) == "celebahq-oracle"
    with pytest.raises(CfbenchError, match=r"holds STEEX's CelebA-HQ attribute oracle"):
        CLASSIFIERS.get("celebahq-densenet")("Smiling", steex_oracle)
    other = tmp_path / "other.pth"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CfbenchError, match=r"is not the DiVE/DiME CelebA DenseNet-121 classifier \(classifier\.pth, "
                                           r"published at https://huggingface.co/guillaumejs2403/DiME.*\): expected "
                                           r"\{'feat_extract'"):  # fmt: skip
        CLASSIFIERS.get("celeba-densenet121")("Smiling", other)

    broken = {"feat_extract": dict(torch.load(dime, weights_only=True)["feat_extract"]), "classifier": {}}
    broken["feat_extract"].pop("feat_extract.features.conv0.weight")
    torch.save(broken, other)
    with pytest.raises(CfbenchError, match=r"does not fit DiVE's DenseNet-121 \+ Linear\(1024, 40\): 3 missing keys"):
        CLASSIFIERS.get("celeba-densenet121")("Smiling", other)


# -- end to end ------------------------------------------------------------------------------------
def test_run_on_celeba(dime_classifier, workdir: Path) -> None:
    make_celeba(workdir / "data" / "celeba", "txt")
    (workdir / "home" / "weights").mkdir(parents=True)
    (workdir / "home" / "weights" / WEIGHTS["celeba-densenet121"].filename).write_bytes(dime_classifier[0].read_bytes())
    env = {"CFBENCH_DATA": str(workdir / "data"), "CFBENCH_HOME": str(workdir / "home")}
    result = invoke("run", "--method", "identity", "--dataset", "celeba", "--attr", "smile", "--n", "2",
                    "--protocol", "cfbench-v1", "--device", "cpu", "--no-progress", env=env)  # fmt: skip
    assert result.exit_code == 0 and result.exception is None, result.output
    run_dir = only_run_dir(workdir / "runs")
    assert run_dir.parent.name == "celeba_smile"
    assert sorted(p.stem for p in (run_dir / "originals").glob("*.png")) == ["000002", "000004"]
    table = (run_dir / "samples.csv").read_text()
    assert "000002" in table and "000004" in table
    assert '"classifier": "celeba-densenet121"' in (run_dir / "run.json").read_text()


def test_an_oracle_given_a_classifier_file_says_so(dime_classifier) -> None:
    """The reverse of the above: the CelebA oracle's loader names the classifier it was given."""
    from oracles.celeba_oracle import celeba_oracle

    with pytest.raises(CfbenchError, match=r"holds the DiVE/DiME CelebA DenseNet-121 classifier \(celeba-densenet121, "
                                           r"classifier\.pth\), not the DiVE/DiME CelebA attribute oracle"):
        celeba_oracle(dime_classifier[0])


EVALUATION = ("celeba-oracle", "vggface2-resnet50", "inception-v3-fid", "simsiam-resnet50")


@pytest.mark.parametrize("method, needs", [
    ("dime", ("ddpm-celeba128", "vgg19-imagenet")),  # the backbone and L_perc's VGG19
    ("ace", ("ddpm-celeba128",)),
    ("gcd", ("diffae-celeba128", "vgg16-imagenet")),  # the DiffAE and LPIPS's VGG16
    ("ldce", ("minisd", "clip-vit-large-patch14")),  # LDCE-txt: the checkpoint and the text encoder
])  # fmt: skip
def test_a_paper_setting_run_lists_every_missing_file_in_one_line(workdir: Path, method: str, needs: tuple) -> None:
    """A method on celeba at the paper's protocol with an empty weights cache: the
    classifier, every file of the method and every evaluation network, in one line, with
    the fetch command for the files that have a direct link; nothing is written."""
    make_celeba(workdir / "data" / "celeba", "csv")
    env = {"CFBENCH_DATA": str(workdir / "data"), "CFBENCH_HOME": str(workdir / "home")}
    result = invoke("run", "--method", method, "--dataset", "celeba", "--attr", "smile", "--n", "2", "--device", "cpu",
                    "--no-progress", env=env)  # fmt: skip
    assert result.exit_code != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: missing weights: "), result.output
    for name in ("celeba-densenet121", *needs, *EVALUATION):
        assert f"{WEIGHTS[name].filename} ({name})" in lines[0]
    assert re.search(r"`cfbench weights fetch [^`]*inception-v3-fid[^`]*`", lines[0])
    assert not (workdir / "runs").exists()


def write_published_networks(weights: Path, classifier: Path) -> None:
    """Random-weight files in the published containers, under the registry's file names:
    the classifier, ACE/DiME's DDPM and every evaluation network of the celeba protocol
    (torchvision's VGG16 with its classifier cut to placeholders, which LPIPS does not read)."""
    from cfbench.diffusion.unet import CELEBA_128, UNet
    from cfbench.oracles import inception, simsiam
    from cfbench.oracles.celeba_oracle import dive_oracle
    from cfbench.oracles.vggface2 import VGGFace2ResNet50

    weights.mkdir(parents=True)
    (weights / WEIGHTS["celeba-densenet121"].filename).write_bytes(classifier.read_bytes())
    torch.manual_seed(0)
    torch.save(UNet(CELEBA_128).state_dict(), weights / WEIGHTS["ddpm-celeba128"].filename)  # guided-diffusion
    torch.save(dive_oracle_container(randomized(dive_oracle(), 5)), weights / WEIGHTS["celeba-oracle"].filename)
    arrays = {k: v.numpy() for k, v in randomized(VGGFace2ResNet50(), 6).state_dict().items()
              if not k.endswith("num_batches_tracked")}  # fmt: skip
    arrays["fc.weight"], arrays["fc.bias"] = np.zeros((8631, 2048), np.float32), np.zeros(8631, np.float32)
    (weights / WEIGHTS["vggface2-resnet50"].filename).write_bytes(python2_pickle(arrays))
    torch.save({"epoch": 100, "arch": "resnet50",
                "state_dict": {"module." + k: v for k, v in randomized(simsiam.SimSiamResNet50(), 7).state_dict().items()}},
               weights / WEIGHTS["simsiam-resnet50"].filename)  # fmt: skip
    torch.save(randomized(inception.build_inception(), 8).state_dict(), weights / WEIGHTS["inception-v3-fid"].filename)
    vgg16 = {f"features.{k}": v for k, v in make_layers(cfgs["D"]).state_dict().items()}  # LPIPS's trunk
    vgg16.update({f"classifier.{i}.{p}": torch.zeros(1) for i in (0, 3, 6) for p in ("weight", "bias")})  # unused
    torch.save(vgg16, weights / WEIGHTS["vgg16-imagenet"].filename)


def test_celeba_end_to_end_with_every_network_in_its_published_format(workdir: Path) -> None:
    """`cfbench run --dataset celeba` at the paper's protocol, every network read from its
    published container in a temporary CFBENCH_HOME (random weights): ACE through the DDPM
    (attack and filter cut to one step so that it runs in seconds), then PGD with an
    unbounded budget, which flips the random classifier so that every evaluation network runs."""
    make_celeba(workdir / "data" / "celeba", "txt")
    torch.manual_seed(0)  # torchvision's initialisation: the logits depend on the image
    classifier = workdir / "classifier.pth"
    torch.save({"feat_extract": OfficialDenseNet121().state_dict(), "classifier": nn.Linear(1024, 40).state_dict()},
               classifier)  # fmt: skip
    write_published_networks(workdir / "home" / "weights", classifier)
    env = {"CFBENCH_DATA": str(workdir / "data"), "CFBENCH_HOME": str(workdir / "home")}
    common = ("run", "--dataset", "celeba", "--attr", "smile", "--n", "2", "--device", "cpu", "--no-progress")

    result = invoke(*common, "--method", "ace", "--set", "tau=1", "--set", "attack_iterations=1", env=env)
    assert result.exit_code == 0 and result.exception is None, result.output
    run_dir = only_run_dir(workdir / "runs")
    run = json.loads((run_dir / "run.json").read_text())
    assert run["protocol"] == "cfbench-v3" and run["identity"]["config"]["backbone"] == "ddpm-celeba128"
    assert {"classifier celeba-densenet121", "backbone ddpm-celeba128", "oracle celeba-oracle",
            "identity vggface2-resnet50", "features inception-v3-fid", "simsiam simsiam-resnet50",
            "perceptual lpips-vgg"} <= set(run["weights"])  # fmt: skip
    for folder in ("counterfactuals", "null", "masks"):
        assert sorted(p.stem for p in (run_dir / folder).glob("*.png")) == ["000002", "000004"], folder

    result = invoke(*common, "--method", "pgd", "--set", "epsilon=1", "--set", "step_size=0.1", env=env)
    assert result.exit_code == 0 and result.exception is None, result.output
    run_dir = next(p for p in (workdir / "runs" / "celeba_smile").iterdir() if p.name.startswith("pgd-"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["fr"]["value"] == 100.0
    for name, network in [("fva", "vggface2-resnet50"), ("fs", "vggface2-resnet50"), ("mnac", "celeba-oracle"),
                          ("cd", "celeba-oracle"), ("fid", "inception-v3-fid"), ("kid", "inception-v3-fid")]:
        assert metrics[name]["network"] == network and math.isfinite(metrics[name]["value"]), name

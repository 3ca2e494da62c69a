"""The method toolkit around the loop: the backbone registry, image spaces, per-sample
randomness, loss networks kept apart from evaluation networks, config validation, the
fit phase, and the weights a run records."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import tests.fixtures.toy  # noqa: F401  (registers the toy dataset and classifier)
from cfbench.diffusion.backbones import BACKBONES, create_backbone
from cfbench.diffusion.spaces import LatentSpace, PixelSpace
from cfbench.errors import CfbenchError
from cfbench.losses import LOSS_NETWORKS, LossNetwork, overlaps, register
from cfbench.methods import METHODS, Counterfactuals, Method, MethodConfig, hparam
from cfbench.randomness import SampleRNG
from cfbench.runner import Run, RunSpec
from tests.conftest import assert_one_error_line, invoke
from tests.fixtures.tiny_backbone import save_tiny_ddpm  # (and the tiny-ddpm backbone record)


# -- backbones -------------------------------------------------------------------------------------
def test_the_process_comes_from_the_backbone_record():
    record = BACKBONES.get("ddpm-celeba128")
    assert record.process == {"num_timesteps": 500, "schedule": "linear", "variance": "learned_range"}
    assert record.make_process("200").num_timesteps == 200
    assert record.make_process("200").original_num_timesteps == 500
    assert BACKBONES.get("synthfaces-ddpm").process["num_timesteps"] == 500
    assert BACKBONES.get("diffae-celeba128").make_process("ddim100").timestep_map.tolist() == list(range(0, 1000, 10))
    with pytest.raises(CfbenchError, match="backbone ddpm-celeba128: cannot take exactly 300"):
        record.make_process("ddim300")


def test_dime_has_no_process_settings_left():
    fields = {f.name for f in dataclasses.fields(METHODS.get("dime").Config)}
    assert not fields & {"diffusion_steps", "noise_schedule"}
    with pytest.raises(CfbenchError, match="--set diffusion_steps: DiMEConfig has no such key"):
        METHODS.get("dime").resolve_config("celeba", None, {"diffusion_steps": "1000"})


def test_create_backbone_reads_zoo_and_user_files(tmp_path):
    zoo = create_backbone("synthfaces-ddpm", "50")
    assert zoo.space == PixelSpace(64) and zoo.process.num_timesteps == 50 and len(zoo.digest) == 64
    path = save_tiny_ddpm(tmp_path / "tiny.pt")
    tiny = create_backbone("tiny-ddpm", "20", path)
    assert tiny.record.kind == "ddpm" and tiny.process.num_timesteps == 20
    assert tiny.digest == create_backbone("tiny-ddpm", None, path).digest != zoo.digest
    with pytest.raises(CfbenchError, match="give its path"):
        create_backbone("tiny-ddpm")
    with pytest.raises(CfbenchError, match="Unknown backbone 'ddpm-celeba'. Did you mean: ddpm-celeba128"):
        create_backbone("ddpm-celeba")


def test_a_missing_published_backbone_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("CFBENCH_HOME", str(tmp_path))
    with pytest.raises(CfbenchError, match=r"ddpm-celeba128: ddpm-celeba.pt not found at .*huggingface"):
        create_backbone("ddpm-celeba128", "200")


# -- image spaces ----------------------------------------------------------------------------------
def test_pixel_space_round_trip_and_gradient():
    space = PixelSpace(8)
    images = torch.rand(2, 3, 8, 8)
    x = space.encode(images)
    assert x.min() >= -1 and x.max() <= 1
    torch.testing.assert_close(space.decode(x, (8, 8)), images)
    leaf = torch.zeros(1, 3, 8, 8, requires_grad=True)
    space.decode(leaf, (16, 16), clamp=False).sum().backward()
    torch.testing.assert_close(leaf.grad.sum(), torch.tensor(16 * 16 * 3 / 2))  # d/dx (x+1)/2, 4 pixels each
    assert space.encode(torch.rand(2, 3, 16, 16)).shape == (2, 3, 8, 8)


def test_latent_space_composes_the_autoencoder():
    pixels = PixelSpace(8)
    latent = LatentSpace(pixels, encoder=lambda x: x[:, :1] * 2, decoder=lambda z: z.repeat(1, 3, 1, 1) / 2, scale=0.5)
    images = torch.rand(1, 1, 8, 8).repeat(1, 3, 1, 1)
    z = latent.encode(images)
    assert z.shape == (1, 1, 8, 8)
    torch.testing.assert_close(z, (images[:, :1] * 2 - 1) * 2 * 0.5)
    torch.testing.assert_close(latent.decode(z, (8, 8)), images)


# -- randomness ------------------------------------------------------------------------------------
def test_sample_rng_depends_on_seed_and_id_only():
    a = SampleRNG(3, ["p", "q"]).randn((2,))
    b = SampleRNG(3, ["q", "p"]).randn((2,))
    assert torch.equal(a, b.flip(0))
    assert not torch.equal(a, SampleRNG(4, ["p", "q"]).randn((2,)))
    rng = SampleRNG(3, ["p", "q"])
    assert torch.equal(rng.randn((2,), rows=[1]), a[1:]) and rng.rand((5,)).shape == (2, 5)


# -- loss networks ---------------------------------------------------------------------------------
def test_a_loss_network_that_scores_the_run_is_refused_or_flagged():
    if "test-oracle-loss" not in LOSS_NETWORKS:
        register(LossNetwork("test-oracle-loss", "cfbench.losses:synthfaces_vgg_features", "test",
                             shares=("synthfaces-oracle",)))  # fmt: skip
        register(LossNetwork("test-shared-loss", "cfbench.losses:synthfaces_vgg_features", "test",
                             shares=("synthfaces-oracle",), on_overlap="flag", why="the papers share it"))  # fmt: skip
    evaluation = {"mnac": ["synthfaces-oracle"], "fva": ["synthfaces-identity"]}
    with pytest.raises(CfbenchError, match="shares its weights with the evaluation network synthfaces-oracle of mnac"):
        overlaps("test-oracle-loss", evaluation)
    assert overlaps("test-oracle-loss", {"fva": ["synthfaces-identity"]}) == []
    assert overlaps("test-shared-loss", evaluation) == ["mnac"]  # flagged, not refused
    assert overlaps("synthfaces-vgg", evaluation) == overlaps("vgg19-imagenet", evaluation) == []


def test_dime_on_synthfaces_records_its_own_loss_network(workdir):
    result = invoke("run", "--method", "dime", "--dataset", "synthfaces", "--attr", "smile", "--n", "1",
                    "--profile", "quick", "--no-progress", "--device", "cpu", "--set", "tau=1",
                    "--protocol", "cfbench-v1", "--metric", "mnac", "--metric", "fva", "--out", "run")  # fmt: skip
    assert result.exit_code == 0, (result.output, result.exception)
    info = json.loads((workdir / "run" / "run.json").read_text())
    metrics = json.loads((workdir / "run" / "metrics.json").read_text())
    assert info["loss_networks"] == {"L_perc": "synthfaces-vgg"}
    assert not info["flags"] and "flags" not in metrics["mnac"] and "flags" not in metrics["fva"]
    assert {"classifier synthfaces-densenet", "backbone synthfaces-ddpm", "L_perc synthfaces-vgg",
            "oracle synthfaces-oracle", "identity synthfaces-identity"} == set(info["weights"])  # fmt: skip


# -- config validation -----------------------------------------------------------------------------
@pytest.mark.parametrize("sets, message", [
    (("norm=l3",), "--set norm=l3: norm must be one of linf, l2."),
    (("steps=-1",), "--set steps=-1: steps must be >= 0."),
])  # fmt: skip
def test_a_bad_set_is_one_line_and_no_run_directory(workdir, sets, message):
    args = [a for s in sets for a in ("--set", s)]
    result = invoke("run", "--method", "pgd", "--dataset", "toy", "--attr", "bright", "--n", "2", "--no-progress",
                    *args)  # fmt: skip
    assert result.exit_code == 2
    assert assert_one_error_line(result.stderr, result.stdout) == f"error: {message}"
    assert not (workdir / "runs").exists()


def test_dime_variant_and_tau_are_checked_before_loading():
    cls = METHODS.get("dime")
    with pytest.raises(CfbenchError, match="--set variant=fancy: variant must be one of dime, direct"):
        cls.resolve_config("celeba", None, {"variant": "fancy"})
    with pytest.raises(CfbenchError, match="--set tau=0: tau must be >= 1"):
        cls.resolve_config("celeba", None, {"tau": "0"})


# -- the fit phase ---------------------------------------------------------------------------------
@dataclass
class MeanShiftConfig(MethodConfig):
    images: int = hparam(8, "tests", "training images the fit looks at", low=1)


class MeanShift(Method):
    """Learns the mean image of the training split, then moves inputs towards it."""

    Config = MeanShiftConfig
    access = "black-box"
    fits_made = 0

    def fit(self, split, classifier, generator, directory: Path) -> dict[str, int]:
        type(self).fits_made += 1
        order = torch.randperm(len(split), generator=generator)[: self.config.images].tolist()
        _, images, _ = split.batch(order)
        classifier.predict(images)
        torch.save(images.mean(0), directory / "mean.pt")
        self.mean = images.mean(0)
        return {"diffusion_evals": 0}

    def load_fit(self, directory: Path) -> None:
        self.mean = torch.load(directory / "mean.pt")

    def explain(self, images, targets, classifier, rng):
        cf = (images + self.mean.to(images.device)) / 2
        return Counterfactuals(cf, classifier.predict(cf) == targets.cpu(), counters=classifier.counters())


def test_fit_runs_once_records_its_cost_and_is_loaded_on_resume(tmp_path):
    if "test-mean-shift" not in METHODS:
        METHODS.register("test-mean-shift")(MeanShift)

    def run(n: int) -> Run:
        job = Run(RunSpec(method="test-mean-shift", dataset="toy", attr="bright", n=n, batch_size=2, device="cpu",
                          out=tmp_path / "run", progress=False))  # fmt: skip
        job.execute(evaluate=False)
        return job

    MeanShift.fits_made = 0
    first = run(2)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert MeanShift.fits_made == 1 and (tmp_path / "run" / "method" / "mean.pt").exists()
    assert info["fit"]["classifier_queries"] == 8 and info["fit"]["classifier_gradients"] == 0
    assert info["fit"]["seconds"] >= 0
    second = run(4)  # resumes: the fit is read back, not redone
    assert MeanShift.fits_made == 1 and torch.equal(second.method.mean, first.method.mean)
    assert len(second.record.read_table()) == 4


# -- weights ---------------------------------------------------------------------------------------
def test_resuming_with_other_weights_is_refused(workdir, tmp_path):
    weights = save_tiny_ddpm(tmp_path / "tiny.pt")
    sets = ["--set", "backbone=tiny-ddpm", "--set", f"weights_path={weights}", "--set", "respacing=20",
            "--set", "tau=2", "--set", "lambda_p=0"]  # fmt: skip
    args = ["run", "--method", "dime", "--dataset", "toy", "--attr", "bright", "--n", "1", "--no-progress",
            "--out", "run", *sets]  # fmt: skip
    assert invoke(*args).exit_code == 0
    state = torch.load(weights)
    state["out.2.bias"] = state["out.2.bias"] + 1
    torch.save(state, weights)
    result = invoke(*args)
    assert result.exit_code == 2
    assert "was made with other weights of backbone tiny-ddpm" in assert_one_error_line(result.stderr, result.stdout)


def test_a_missing_evaluation_network_stops_the_run_before_anything_is_generated(workdir, monkeypatch):
    monkeypatch.setenv("CFBENCH_HOME", str(workdir / "home"))
    result = invoke("run", "--method", "pgd", "--dataset", "synthfaces", "--attr", "smile", "--n", "1",
                    "--no-progress", "--network", "identity=vggface2-resnet50")  # fmt: skip
    assert result.exit_code == 2
    line = assert_one_error_line(result.stderr, result.stdout)
    assert "missing weights: resnet50_ft_weight.pkl (vggface2-resnet50)" in line
    assert not (workdir / "runs").exists()


# -- the null edit ---------------------------------------------------------------------------------
def test_fr_null_is_the_flip_rate_of_the_unguided_method_on_the_same_noise(workdir, tmp_path):
    weights = save_tiny_ddpm(tmp_path / "tiny.pt")
    sets = ["--set", "backbone=tiny-ddpm", "--set", f"weights_path={weights}", "--set", "respacing=20",
            "--set", "tau=3", "--set", "lambda_p=0"]  # fmt: skip
    base = ["run", "--method", "dime", "--dataset", "toy", "--attr", "bright", "--n", "6", "--batch-size", "4",
            "--no-progress", *sets]  # fmt: skip
    assert invoke(*base, "--out", "guided").exit_code == 0
    assert invoke(*base, "--out", "unguided", "--set", "variant=unconditional").exit_code == 0
    guided = pd.read_csv(workdir / "guided" / "samples.csv", dtype={"id": str})
    unguided = pd.read_csv(workdir / "unguided" / "samples.csv", dtype={"id": str})
    for sample_id in guided["id"]:  # the null edit is the unconditional variant, image for image
        null = np.asarray(Image.open(workdir / "guided" / "null" / f"{sample_id}.png"))
        assert np.array_equal(null, np.asarray(Image.open(workdir / "unguided" / "counterfactuals" / f"{sample_id}.png")))
    assert guided["null_success"].tolist() == unguided["success"].tolist()
    metrics = json.loads((workdir / "guided" / "metrics.json").read_text())
    assert metrics["fr_null"]["value"] == pytest.approx(100 * unguided["success"].mean())
    assert metrics["fr_null"]["n"] == 6


def test_a_run_made_without_null_edits_gets_them_on_resume(workdir, tmp_path):
    weights = save_tiny_ddpm(tmp_path / "tiny.pt")
    args = ["run", "--method", "dime", "--dataset", "toy", "--attr", "bright", "--n", "3", "--no-progress",
            "--out", "run", "--set", "backbone=tiny-ddpm", "--set", f"weights_path={weights}",
            "--set", "respacing=20", "--set", "tau=3", "--set", "lambda_p=0"]  # fmt: skip
    assert invoke(*args).exit_code == 0
    table = pd.read_csv(workdir / "run" / "samples.csv", dtype={"id": str})
    made = {i: np.asarray(Image.open(workdir / "run" / "null" / f"{i}.png")) for i in table["id"]}
    for sample_id in table["id"]:
        (workdir / "run" / "null" / f"{sample_id}.png").unlink()
    pd.read_csv(workdir / "run" / "samples.csv").drop(columns=["null_logit", "null_pred", "null_success"]).to_csv(
        workdir / "run" / "samples.csv", index=False)
    counterfactuals = {i: (workdir / "run" / "counterfactuals" / f"{i}.png").stat().st_mtime_ns for i in table["id"]}
    assert invoke(*args).exit_code == 0
    again = pd.read_csv(workdir / "run" / "samples.csv", dtype={"id": str})
    assert again["null_success"].tolist() == table["null_success"].tolist()
    for sample_id in table["id"]:
        assert np.array_equal(np.asarray(Image.open(workdir / "run" / "null" / f"{sample_id}.png")), made[sample_id])
        assert (workdir / "run" / "counterfactuals" / f"{sample_id}.png").stat().st_mtime_ns == counterfactuals[sample_id]


def test_methods_without_a_null_edit_say_so(workdir):
    result = invoke("run", "--method", "identity", "--dataset", "toy", "--attr", "bright", "--n", "2",
                    "--no-progress", "--out", "run")  # fmt: skip
    assert result.exit_code == 0
    metrics = json.loads((workdir / "run" / "metrics.json").read_text())
    assert metrics["fr_null"]["value"] is None and "no null edit" in metrics["fr_null"]["reason"]


def test_a_diffae_backbone_denoises_conditioned_on_its_semantic_code():
    from cfbench.diffusion.sampling import ddim_invert, denoise

    backbone = create_backbone("synthfaces-diffae", "ddim5")
    assert backbone.record.kind == "diffae" and backbone.space == PixelSpace(64)
    x = backbone.space.encode(torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(0)))
    with torch.no_grad():
        z_sem = backbone.model.encode(x)
    denoiser = backbone.denoiser(2, condition=z_sem)
    x_T = ddim_invert(denoiser, x)
    out = denoise(denoiser, x_T, sampler="ddim")
    assert out.shape == x.shape and denoiser.evals.tolist() == [10, 10]
    torch.testing.assert_close(out, backbone.model.render(z_sem, backbone.model.invert(x, z_sem, 5), 5))
    with pytest.raises(ValueError, match="z_sem"):
        backbone.denoiser(2)

"""The synthfaces diffusion recipes train, measure and write their weights end to end,
and resume from their saved training state (tiny widths, a few steps)."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from cfbench import zoo
from cfbench.errors import CfbenchError
from cfbench.record import read_png
from cfbench.zoo.train import TrainingState, checkpoint_path, record_throughput, remeasure, train
from cfbench.zoo.weights import load_weights
from tests.conftest import REPO

CPU = torch.device("cpu")


def tiny_recipe(name: str, monkeypatch: pytest.MonkeyPatch, tmp_path, **changes) -> None:
    """The recipe at tiny widths, its training state kept under ``tmp_path``."""
    monkeypatch.setenv("CFBENCH_HOME", str(tmp_path / "home"))
    entry = zoo.ZOO[name]
    tiny = {**entry.arguments, "model_channels": 32, "channel_mult": (1, 1), "attention_resolutions": ()}
    if entry.kind == "diffae":
        tiny["enc_channel_mult"] = (1, 1, 1)
    monkeypatch.setitem(zoo.ZOO, name, dataclasses.replace(entry, arguments=tiny, batch_size=4, **changes))


@pytest.mark.parametrize("name", ["synthfaces-ddpm", "synthfaces-diffae"])
def test_diffusion_recipe_trains_measures_and_saves(name, tmp_path, monkeypatch):
    entry = zoo.ZOO[name]
    tiny_recipe(name, monkeypatch, tmp_path)
    record = train(name, CPU, steps=2, train_size=16, seed=0, out_dir=tmp_path, eval_size=4)
    measured = record["measured"]
    if entry.kind == "ddpm":
        assert measured["samples"] == 4 and measured["sampling_steps"] == entry.evaluation["respacing"]
        assert set(measured["oracle_frequency_generated"]) == set(measured["oracle_frequency_data"])
        assert 0 <= measured["max_frequency_gap_points"] <= 100
        assert all(0 <= v <= 1 for v in measured["mean_rgb_generated"] + measured["mean_rgb_data"])
        assert len(measured["mean_rgb_generated"]) == len(measured["mean_rgb_data"]) == 3
        assert measured["fid_synthfaces_features"] > measured["fid_floor_fresh_real_images"] >= 0  # 2 steps: noise
    else:
        assert measured["images"] == 4 and 0 <= measured["oracle_attributes_kept"] <= 100
        assert measured["encode_steps"] == entry.evaluation["encode_steps"]
        assert measured["l2_mean"] > 0 and measured["lpips_synthfaces_mean"] > 0
        for key in ("semantic_swap_follows_pct", "semantic_swap_follows_smiling_pct", "semantic_swap_follows_young_pct"):
            assert key in measured and (measured[key] != measured[key] or 0 <= measured[key] <= 100)  # NaN: no pair differs
    assert json.loads((tmp_path / f"{name}.json").read_text())["training"]["steps"] == 2
    card = (tmp_path / f"{name}.md").read_text()
    assert card.startswith(f"# {name}") and f"]({name}.png)" in card
    rows, columns = (4, 1) if entry.kind == "ddpm" else (2, 4)  # 4 samples; 4 images over their reconstructions
    cell = entry.image_size + 2
    assert read_png(tmp_path / f"{name}.png").shape == (3, 2 + rows * cell, 2 + columns * cell)
    load_weights(zoo.ZOO[name].build(), tmp_path / f"{name}.safetensors", name)  # strict round trip
    row = {"device": "cpu", "dtype": "bf16", "batch": 8, "evals_per_s": 1.25, "images_per_s": 10.0}
    record_throughput(name, {"mode": "forward", "command": "bench", "machine": "here", "rows": [row]}, tmp_path)
    assert "| cpu | bf16 | 8 | 1.25 | 10.0 |" in (tmp_path / f"{name}.md").read_text()
    assert (tmp_path / f"{name}.png").exists()  # the picture stays
    again = remeasure(name, CPU, 4, tmp_path)
    assert again["training"] == record["training"] and "cfbench zoo measure" in again["measure_command"]
    retrained = train(name, CPU, steps=1, train_size=16, seed=0, out_dir=tmp_path, eval_size=4)
    assert retrained["throughput"]["forward"]["rows"] == [row]  # the architecture's speed is kept


def saved_weights(path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_resumed_training_equals_uninterrupted_training(tmp_path, monkeypatch):
    """3 steps, then resumed to 5, give the weights (EMA) of 5 steps in one go: the
    network, EMA, optimiser, schedule and random state all come back."""
    name = "synthfaces-ddpm"
    tiny_recipe(name, monkeypatch, tmp_path)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    record = train(name, CPU, steps=5, train_size=16, seed=0, out_dir=straight, eval_size=4)
    train(name, CPU, steps=3, train_size=16, seed=0, out_dir=resumed, eval_size=4)
    again = train(name, CPU, steps=5, train_size=16, seed=0, out_dir=resumed, eval_size=4, resume=True)
    assert again["training"]["steps"] == 5
    assert again["training"]["loss_history"][-1] == record["training"]["loss_history"][-1]
    a, b = saved_weights(straight / f"{name}.safetensors"), saved_weights(resumed / f"{name}.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_training_state_loads_onto_the_cpu(tmp_path, monkeypatch):
    """The state is read onto the CPU and each part moves its own tensors: read straight
    onto the training device (a GPU), the random state came back there and
    ``torch.set_rng_state`` refused it."""
    name = "synthfaces-ddpm"
    tiny_recipe(name, monkeypatch, tmp_path)
    train(name, CPU, steps=3, train_size=16, seed=0, out_dir=tmp_path, eval_size=4)
    entry = zoo.ZOO[name]
    model = entry.build()
    saved = torch.load(checkpoint_path(name), weights_only=True)
    torch.manual_seed(123)
    state = TrainingState(checkpoint_path(name), entry, steps=3, train_size=16, seed=0)
    step, history, _ = state.load({"model": model})
    assert step == 3 and history
    assert torch.equal(torch.get_rng_state(), saved["rng"])
    assert all(torch.equal(value, saved["model"][key]) for key, value in model.state_dict().items())


def test_resume_refuses_missing_or_foreign_training_state(tmp_path, monkeypatch):
    name = "synthfaces-ddpm"
    tiny_recipe(name, monkeypatch, tmp_path)
    with pytest.raises(CfbenchError, match="no training state"):
        train(name, CPU, steps=2, train_size=16, seed=0, out_dir=tmp_path, eval_size=4, resume=True)
    train(name, CPU, steps=2, train_size=16, seed=0, out_dir=tmp_path, eval_size=4)
    with pytest.raises(CfbenchError, match="different recipe or run"):
        train(name, CPU, steps=4, train_size=16, seed=1, out_dir=tmp_path, eval_size=4, resume=True)
    checkpoint_path(name).write_bytes(b"not a checkpoint")
    with pytest.raises(CfbenchError, match="not a readable training state"):
        train(name, CPU, steps=4, train_size=16, seed=0, out_dir=tmp_path, eval_size=4, resume=True)


def test_cosine_recipe_resumes_only_to_its_own_step_count(tmp_path, monkeypatch):
    name = "synthfaces-ddpm"
    tiny_recipe(name, monkeypatch, tmp_path, lr_schedule="cosine")
    train(name, CPU, steps=2, train_size=16, seed=0, out_dir=tmp_path, eval_size=4)
    with pytest.raises(CfbenchError, match="resume it with --steps 2"):
        train(name, CPU, steps=4, train_size=16, seed=0, out_dir=tmp_path, eval_size=4, resume=True)


def test_ema_ramps_its_decay_up_to_the_recipes():
    from torch.optim.swa_utils import AveragedModel

    from cfbench.zoo.train import ema_with_warmup

    model = torch.nn.Linear(1, 1, bias=False)
    model.weight.data.zero_()
    average = AveragedModel(model, multi_avg_fn=ema_with_warmup(0.999))
    average.update_parameters(model)  # the first update copies
    model.weight.data.fill_(1.0)
    average.update_parameters(model)  # after 1 update the decay is 2/11
    assert average.module.weight.item() == pytest.approx(1 - 2 / 11)
    for _ in range(20_000):
        average.update_parameters(model)
    model.weight.data.fill_(2.0)
    before = average.module.weight.item()
    average.update_parameters(model)  # long after the ramp: the recipe's 0.999
    assert average.module.weight.item() == pytest.approx(before + (2.0 - before) * 0.001)


def test_latent_recipes_train_measure_and_save(tmp_path, monkeypatch):
    """The autoencoder, then the latent model on its latents (read from where the model is
    written): cards with reconstruction figures, the latent scale, conditional samples and
    the null edit."""
    monkeypatch.setenv("CFBENCH_HOME", str(tmp_path / "home"))
    vae, ldm = zoo.ZOO["synthfaces-vae"], zoo.ZOO["synthfaces-ldm"]
    monkeypatch.setitem(zoo.ZOO, vae.name, dataclasses.replace(vae, arguments={**vae.arguments, "block_out_channels": (8, 8, 8)},
                                                                batch_size=4))
    monkeypatch.setitem(zoo.ZOO, ldm.name, dataclasses.replace(
        ldm, arguments={**ldm.arguments, "block_out_channels": (16, 16, 16), "attention_head_dim": 2}, batch_size=4,
        evaluation={"ddim_steps": 4, "strength": 0.5, "scale": 3.0}))
    measured = train(vae.name, CPU, steps=2, train_size=16, seed=0, out_dir=tmp_path, eval_size=4)["measured"]
    assert measured["images"] == 4 and measured["l2_mean"] > 0 and 0 <= measured["oracle_attributes_kept"] <= 100
    stored = load_weights(zoo.ZOO[vae.name].build(), tmp_path / f"{vae.name}.safetensors", vae.name)
    assert float(stored.scale_factor) == measured["latent_scale_factor"] != 1.0  # the scale is measured and shipped
    record = train(ldm.name, CPU, steps=2, train_size=16, seed=0, out_dir=tmp_path, eval_size=4)
    measured = record["measured"]
    assert measured["samples"] == 4 and measured["ddim_steps"] == 4 and measured["fid_synthfaces_features"] >= 0
    for key in ("conditional_oracle_agrees_smiling_pct", "conditional_oracle_agrees_young_pct"):
        assert 0 <= measured[key] <= 100
    null = measured["null_edit"]
    assert null["strength"] == 0.5 and all(0 <= null[k] <= 100 for k in
                                           ("oracle_attributes_kept", "classifier_kept_smiling_pct", "classifier_kept_young_pct"))
    assert record["storage"]["relative_output_error"] is not None
    cell = ldm.image_size + 2
    # 4 samples, 4 images and their 4 null edits, in 4 rows
    assert read_png(tmp_path / f"{ldm.name}.png").shape == (3, 2 + 4 * cell, 2 + 3 * cell)
    load_weights(zoo.ZOO[ldm.name].build(), tmp_path / f"{ldm.name}.safetensors", ldm.name)  # strict round trip


def test_ddpm_recipe_was_measured_to_train_within_the_cpu_budget():
    """The DDPM recipe's default schedule is the one measured from scratch on the 2-core CPU
    (`benchmarks/results/synthfaces-ddpm-recipe.json`): it trains within 4 hours and the
    model it gives keeps ≥ 97% of the explained classifier's decisions and of the oracle's
    under DiME's and ACE's null edits (256 images), with the null edits' FID at most 2× the
    real-vs-real floor."""
    record = json.loads((REPO / "benchmarks/results/synthfaces-ddpm-recipe.json").read_text())
    assert record["steps"] == zoo.ZOO["synthfaces-ddpm"].steps and record["machine"].startswith("cpu, 2 threads")
    assert record["train_seconds"] + record["render_seconds"] <= 4 * 3600
    for method, figures in record["null_edit"].items():
        kept = [figures["classifier_kept_smile"]["value"], figures["classifier_kept_age"]["value"],
                figures["oracle_pairs_kept"]]
        assert min(kept) >= 97.0, (method, kept)
        assert figures["fid"]["null_vs_originals"] <= 2 * figures["fid"]["floor"], method


def test_the_shortcut_figure_on_512_images_extends_the_published_row():
    """`benchmarks/results/dime-shortcut-smile-n512.json` repeats the published shortcut row
    on the first 256 images and gives images 257–512 as the difference of the two runs."""
    record = json.loads((REPO / "benchmarks/results/dime-shortcut-smile-n512.json").read_text())
    published = json.loads((REPO / record["first_256_published"]["run"] / "metrics.json").read_text())
    first, both = published["shortcut_changed"], record["n512"]["shortcut_changed"]
    assert record["first_256_published"]["shortcut_changed"]["value"] == round(first["value"], 2)
    assert record["n512"]["fr"]["n"] == 512 and both["n"] > first["n"]
    rest = record["images_257_to_512"]["shortcut_changed"]
    assert rest["successes"] == both["n"] - first["n"]
    assert rest["changed"] == round(both["value"] * both["n"] / 100) - round(first["value"] * first["n"] / 100)
    assert rest["value"] == round(100 * rest["changed"] / rest["successes"], 2)

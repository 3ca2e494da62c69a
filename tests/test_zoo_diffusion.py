"""The synthfaces diffusion recipes train, measure and write their weights end to end
(tiny widths, two steps: the real recipes run on a GPU)."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from cfbench import zoo
from cfbench.zoo.train import train
from cfbench.zoo.weights import load_weights


@pytest.mark.parametrize("name", ["synthfaces-ddpm", "synthfaces-diffae"])
def test_diffusion_recipe_trains_measures_and_saves(name, tmp_path, monkeypatch):
    entry = zoo.ZOO[name]
    tiny = {**entry.arguments, "model_channels": 32, "channel_mult": (1, 1), "attention_resolutions": ()}
    if entry.kind == "diffae":
        tiny["enc_channel_mult"] = (1, 1, 1)
    monkeypatch.setitem(zoo.ZOO, name, dataclasses.replace(entry, arguments=tiny, batch_size=4))
    record = train(name, torch.device("cpu"), steps=2, train_size=16, seed=0, out_dir=tmp_path, eval_size=4)
    measured = record["measured"]
    if entry.kind == "ddpm":
        assert measured["samples"] == 4 and measured["sampling_steps"] == 100
        assert set(measured["oracle_frequency_generated"]) == set(measured["oracle_frequency_data"])
        assert 0 <= measured["max_frequency_gap_points"] <= 100
    else:
        assert measured["images"] == 4 and 0 <= measured["oracle_attributes_kept"] <= 100
        assert measured["l2_mean"] > 0 and measured["lpips_synthfaces_mean"] > 0
    assert json.loads((tmp_path / f"{name}.json").read_text())["training"]["steps"] == 2
    assert (tmp_path / f"{name}.md").read_text().startswith(f"# {name}")
    load_weights(zoo.ZOO[name].build(), tmp_path / f"{name}.safetensors", name)  # strict round trip

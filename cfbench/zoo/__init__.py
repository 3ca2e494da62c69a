"""The `synthfaces` model zoo: the classifiers to explain and the stand-ins for the
papers' evaluation networks, trained here by `cfbench zoo train <name>`.

| name | stands in for | used by |
|---|---|---|
| synthfaces-densenet | the DiME/ACE CelebA DenseNet-121 | classifier to explain (every attribute) |
| synthfaces-shortcut-smile | — (a classifier with a planted shortcut) | "did the explanation find the cheeks?" |
| synthfaces-oracle | the VGGFace2-based CelebA attribute oracle | MNAC, CD; its pooled features serve FID |
| synthfaces-identity | VGGFace2 ResNet-50 | FVA, FS |
| synthfaces-simsiam | SimSiam ResNet-50 | S³ |
| synthfaces-vgg | ImageNet VGG19 as a loss network | DiME's L_perc, GCD's LPIPS (no metric uses it) |
| synthfaces-ddpm | the DiME/ACE CelebA guided-diffusion DDPM | DiME, ACE |
| synthfaces-diffae | GCD's CelebA-128 Diffusion Autoencoder | GCD |
| synthfaces-vae | Stable Diffusion's KL autoencoder (the first stage) | synthfaces-ldm |
| synthfaces-ldm | LDCE's class-conditional latent diffusion model | LDCE |
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from cfbench.datasets.synthfaces.spec import ATTRIBUTES, INDEX
from cfbench.diffusion.gaussian import GaussianDiffusion
from cfbench.zoo import networks
from cfbench.zoo.weights import WEIGHTS_DIR, load_weights, read_card

ATTRIBUTE_COUNT = len(ATTRIBUTES)


@dataclass(frozen=True)
class ZooModel:
    """A trainable zoo entry: architecture, training recipe, and how it is used."""

    name: str
    kind: str  # classifier | shortcut | oracle | perceptual | identity | simsiam | ddpm | diffae | autoencoder | ldm
    description: str
    architecture: str
    arguments: dict[str, Any] = field(default_factory=dict)
    image_size: int = 64
    steps: int = 2000
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.05
    train_size: int = 100_000
    per_identity: int = 1
    #: the diffusion process (`GaussianDiffusion.from_config` arguments) of a diffusion model
    diffusion: dict[str, Any] = field(default_factory=dict)
    #: decay of the exponential moving average whose weights are saved (0: none)
    ema: float = 0.0
    #: learning rate after the warm-up: "cosine" decay over the steps, or "constant"
    #: (guided-diffusion and DiffAE train at a constant rate and keep an EMA), which
    #: lets training be resumed to any later step count
    lr_schedule: str = "cosine"
    #: bf16 autocast on CPU as well as CUDA (on by default on CUDA only)
    cpu_bf16: bool = False
    #: how a diffusion model is measured: the DDPM's sampling ``respacing``, the DiffAE's
    #: ``encode_steps`` / ``render_steps`` (`cfbench.zoo.evaluate`)
    evaluation: dict[str, Any] = field(default_factory=dict)
    #: how the weights are stored (`cfbench.zoo.weights`): fp16, or int8 for the largest
    storage: str = "fp16"
    #: the zoo autoencoder whose latents a latent diffusion model works on
    first_stage: str = ""

    def build(self) -> nn.Module:
        return getattr(networks, self.architecture)(**self.arguments)

    def process(self, respacing: str | int | None = None) -> GaussianDiffusion:
        """The diffusion process the model was trained with, optionally respaced."""
        return GaussianDiffusion.from_config(**self.diffusion, respacing=respacing)

    def parameters(self) -> int:
        return sum(p.numel() for p in self.build().parameters())

    def load(self) -> nn.Module:
        """The trained network in eval mode (fp32)."""
        return load_weights(self.build(), WEIGHTS_DIR / f"{self.name}.safetensors", self.name).eval()

    def card(self) -> dict[str, Any]:
        return read_card(self.name)


ZOO: dict[str, ZooModel] = {
    model.name: model
    for model in (
        ZooModel(
            "synthfaces-densenet", "classifier",
            "Multi-attribute classifier to explain (one logit per synthfaces attribute), the analogue of the "
            "DiME/ACE CelebA DenseNet-121 that returns the query attribute's logit.",
            "DenseNetBC", {"out_dim": ATTRIBUTE_COUNT},
        ),
        ZooModel(
            "synthfaces-shortcut-smile", "shortcut",
            "Smiling classifier trained where the Smiling annotation always co-occurs with Rosy_Cheeks while the "
            "rendered smile agrees with it in 80% of images, so it decides on the cheeks: the ground truth for "
            "'did the explanation reveal what the classifier uses?'.",
            "DenseNetBC", {"out_dim": 1}, batch_size=64, steps=800, train_size=20_000,
        ),
        ZooModel(
            "synthfaces-oracle", "oracle",
            "Attribute oracle for MNAC and CD (stand-in for the VGGFace2-based CelebA oracle); its 512-d pooled "
            "features are the synthfaces FID feature network.",
            "ResNetEncoder", {"out_dim": ATTRIBUTE_COUNT}, storage="int8",
        ),
        ZooModel(
            "synthfaces-identity", "identity",
            "Face-identity encoder for FVA and FS (stand-in for VGGFace2 ResNet-50), trained with the supervised "
            "contrastive loss over identities rendered under different attributes plus a hinge that keeps "
            "different identities below cosine 0.1.",
            "DenseNetBC", {"out_dim": 128}, per_identity=4, batch_size=128, steps=3000,
            train_size=40_000,
        ),
        ZooModel(
            "synthfaces-simsiam", "simsiam",
            "Self-supervised encoder for S³ (stand-in for SimSiam ResNet-50), trained with the SimSiam objective.",
            "SimSiam", {}, lr=1e-3, batch_size=64, steps=1500, train_size=40_000,
        ),
        ZooModel(
            "synthfaces-vgg", "perceptual",
            "Narrow VGG attribute classifier whose convolution stages are the synthfaces loss network (methods' "
            "perceptual terms, as VGG19 in DiME's L_perc): its own architecture and weights, used by no metric.",
            "VGGEncoder", {"out_dim": ATTRIBUTE_COUNT}, batch_size=128, steps=600, train_size=60_000,
        ),
        ZooModel(
            "synthfaces-ddpm", "ddpm",
            "Unconditional DDPM in the guided-diffusion layout (ε and learned σ, scale-shift norm, resblock "
            "up/down) with the DiME/ACE CelebA process (500 linear steps), at 64 px and 32 base channels: "
            "sized to be trained on a 2-core CPU (the 128 px, 128-channel CelebA model trains at well under "
            "one image per second there) and to let DiME and ACE run on a laptop CPU. 8 normalisation groups "
            "(4 channels a group at 32 channels, as guided-diffusion's 32 groups at 128): with 32, as in its "
            "first 7,400 training steps, each channel's mean was erased and samples took random hues.",
            "GuidedUNet", {"image_size": 64, "model_channels": 32, "channel_mult": (1, 2, 4, 4), "num_res_blocks": 1,
                           "attention_resolutions": (16, 8), "num_heads": 4, "norm_groups": 8},
            image_size=64, steps=6_000, batch_size=32, lr=2e-4, weight_decay=0.0, train_size=100_000,
            diffusion={"num_timesteps": 500, "schedule": "linear", "variance": "learned_range"}, ema=0.999,
            lr_schedule="constant", cpu_bf16=True, evaluation={"respacing": 50}, storage="int8",
        ),
        ZooModel(
            "synthfaces-diffae", "diffae",
            "Diffusion Autoencoder (semantic encoder to a 512-d z_sem + conditional UNet) in the layout of "
            "DiffAE/GCD's celeba128_autoenc with DiffAE's process (1000 linear steps, ε, DDIM), at 64 px and "
            "32 base channels, sized like synthfaces-ddpm to be trained on a 2-core CPU.",
            "DiffAENet", {"image_size": 64, "model_channels": 32, "channel_mult": (1, 2, 4, 4), "num_res_blocks": 1,
                          "enc_channel_mult": (1, 2, 4, 4, 4), "dropout": 0.0},
            image_size=64, steps=4_000, batch_size=32, lr=2e-4, weight_decay=0.0, train_size=100_000,
            diffusion={"num_timesteps": 1000, "schedule": "linear", "variance": "fixed_large"}, ema=0.999,
            lr_schedule="constant", cpu_bf16=True, evaluation={"encode_steps": 100, "render_steps": 50},
            storage="int8",
        ),
        ZooModel(
            "synthfaces-vae", "autoencoder",
            "KL-regularised autoencoder (diffusers' AutoencoderKL, the first stage of Stable Diffusion and miniSD) "
            "from 64 px images to 16x16x4 latents (f = 4), trained with L1 + the synthfaces-vgg LPIPS + a 1e-6 "
            "KL term as the latent diffusion autoencoders are (without their adversarial term); its latents are "
            "scaled to unit standard deviation on training images.",
            "LatentAutoencoder", {"block_out_channels": (32, 64, 64), "layers_per_block": 1, "latent_channels": 4,
                                  "norm_num_groups": 8, "sample_size": 64},
            image_size=64, steps=3000, batch_size=16, lr=5e-4, weight_decay=0.0, train_size=40_000, cpu_bf16=True,
        ),
        ZooModel(
            "synthfaces-ldm", "ldm",
            "Attribute-conditional latent diffusion model on synthfaces-vae latents, the analogue of LDCE's "
            "class-conditional ImageNet LDM: diffusers' UNet2DConditionModel attending to one token per attribute "
            "(its value, or unknown), trained with the number of known attributes drawn uniformly (none known: the "
            "unconditional model, for classifier-free guidance), with the latent diffusion process (1000 "
            "scaled-linear steps from 0.00085 to 0.012, ε, DDIM timesteps offset by one).",
            "LatentUNet", {"attributes": ATTRIBUTE_COUNT, "context_dim": 64, "sample_size": 16, "in_channels": 4,
                           "out_channels": 4, "block_out_channels": (64, 128, 128), "layers_per_block": 1,
                           "attention_head_dim": 8, "norm_num_groups": 8},
            image_size=64, steps=8_000, batch_size=64, lr=2e-4, weight_decay=0.0, train_size=40_000,
            diffusion={"num_timesteps": 1000, "schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
                       "variance": "fixed_small", "clip_denoised": False, "steps_offset": 1,
                       "set_alpha_to_one": False},
            ema=0.999, lr_schedule="constant", cpu_bf16=True, evaluation={"ddim_steps": 50, "strength": 0.382,
                                                                          "scale": 3.0},
            storage="int8", first_stage="synthfaces-vae",
        ),
    )  # fmt: skip
}


def synthfaces_densenet(attribute: str) -> nn.Module:
    """The classifier to explain for one attribute: the multi-attribute DenseNet's logit."""
    return networks.BinaryHead(ZOO["synthfaces-densenet"].load(), INDEX[attribute])


def synthfaces_shortcut_smile(attribute: str) -> nn.Module:
    """The Smiling classifier with the Rosy_Cheeks shortcut (its ``shortcut``, which the
    ``shortcut_changed`` metric reads)."""
    head = networks.BinaryHead(ZOO["synthfaces-shortcut-smile"].load(), 0)
    head.shortcut = "Rosy_Cheeks"
    return head


synthfaces_densenet.attributes = ATTRIBUTES
synthfaces_shortcut_smile.attributes = ("Smiling",)

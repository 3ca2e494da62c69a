"""The `gcd` method: GCD, Global Counterfactual Directions.

Sobieski & Biecek, ECCV 2024: §3 (eqs. 1 and 3-6), appendix C (Algorithms 1-4), E
(settings) and D.2 (the probability along a direction). Black-box: the classifier is only
queried.

1. **Fit** (Algorithms 1-2), once per run on one *source* image x_s: z_s = Enc(x_s) and
   its DDIM inversion x_T, kept fixed; perturbations u (a uniform random direction, a
   norm uniform in [0, ``radius``]) rendered from (z_s + u, x_T); the classifier's logit
   and the LPIPS to x_s of every render are the targets of a proxy MLP
   (512-256-128-64-2, sigmoid activations, the LPIPS output through a sigmoid) trained
   with AdamW on 1.0·MSE(logit) + 3.0·MSE(LPIPS), one validation batch, early stopping
   when the validation loss exceeds the mean of the last five. With ``perturbation=data``
   (cfbench, for a DiffAE whose z_sem varies in a few directions only) the random direction
   is mapped through the square root of the z_sem covariance of the explained images, the
   proxy learns on the unmapped perturbation, and its directions are mapped back the same
   way (the chain rule through the linear map). Each of ``fits`` outer
   iterations is an independent fit on fresh renders (GCD `gcd/src/strategies/
   single_image_gmc_mlp_proxy_training.py` clears the data every iteration).
2. **Directions**: the CF loss of eq. 1 on the proxy, L = w_cls·s·logit + w_lpips·LPIPS
   (s = +1 when the source is predicted positive, −1 otherwise), differentiated at u = 0:
   g-directions −∇L/‖∇L‖ (eq. 3) for every weight pair, h-directions from the eigenvectors
   of the Hessian of L with (1, 0) (eq. 4), sorted by |eigenvalue|, with the official
   sign (an eigenvector is negated where its eigenvalue is negative). Stored as the unit
   vector to *add* to z_sem. A fit is scored by a line search on the source (its lowest
   true CF loss along g1); the run uses the best fit's directions.
3. **Transfer** (Algorithm 3, eq. 5): every image is encoded and inverted, and rendered
   from z + s·σ·d over the step sizes s ∈ {0, max_step/steps, …, max_step}, σ = −1 where
   the image's prediction differs from the source's (the official reversal). The
   counterfactual is the render at the *smallest step that flips* the classifier (the
   official code keeps every flipping step and leaves the choice open); with several
   directions (``h``, ``h2+``: Table 4's "others combined"), the flipping render of
   lowest CF loss with ``selection_weights``. An h-direction is searched on both of its
   sides (the Hessian leaves an eigenvector's sign open; the official line search spans
   negative and positive steps), each side a candidate of that choice.
4. **BB-LIG** (eq. 6, Algorithm 4): along the renders from step 0 to the counterfactual,
   quantised to 8 bits, the pixel attribution (x_0 − x_cf) · mean_k Δf_k/Δx_k with the
   finite difference set to 0 where the pixel does not change, summed over channels
   (GCD `bblig/src/experiment/sig.py`, ``approx_grad``); f is the query's logit.

Every network is called on chunks of exactly ``network_batch`` rows (`cfbench.chunks`).
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from cfbench.chunks import fixed_chunk_logits, fixed_chunks
from cfbench.diffusion.backbones import Backbone, create_backbone
from cfbench.diffusion.sampling import Denoiser, ddim_invert, denoise
from cfbench.errors import CfbenchError
from cfbench.handles import ClassifierHandle
from cfbench.losses import LOSS_NETWORKS
from cfbench.methods import METHODS, Counterfactuals, Method, MethodConfig, hparam
from cfbench.randomness import SampleRNG
from cfbench.record import quantize
from cfbench.weights import load_all

DIRECTION = re.compile(r"^(none|h|[gh][1-9][0-9]*|h[1-9][0-9]*\+)$")
DIRECTIONS_FILE = "directions.pt"


@dataclass
class GCDConfig(MethodConfig):
    backbone: str = hparam("diffae-celeba128", "GCD §4.1; GCD `gcd/configs` (dae)",
                           "the Diffusion Autoencoder, a name of cfbench.diffusion.backbones (diffae-celeba128, "
                           "diffae-ffhq256, synthfaces-diffae)")  # fmt: skip
    weights_path: str = hparam("", "cfbench", "read the DiffAE weights from this file instead of the cache / zoo")
    encode_steps: int = hparam(250, "GCD supp. E; GCD configs (T_encode)", "DDIM steps of the inversion to x_T",
                               low=1, high=1000)  # fmt: skip
    render_steps: int = hparam(100, "GCD supp. E; GCD configs (T_render)", "DDIM steps of a render", low=1, high=1000)
    loss_network: str = hparam("lpips-vgg", "GCD §3 (eq. 1); GCD `gcd/src/losses` (lpips.LPIPS(net='vgg'))",
                               "the LPIPS of the CF loss and of the proxy's target, a cfbench.losses name")
    source: int = hparam(-1, "GCD §3 (a single source image)",
                         "index in the evaluation split of the source image (negative: from its end)")
    fits: int = hparam(50, "GCD supp. E; GCD configs (n_iters)", "independent proxy fits (outer iterations)", low=1)
    renders: int = hparam(4096, "GCD supp. F; GCD configs (n_steps_dae × batch_size)",
                          "perturbed renders per fit, the proxy's data", low=16)  # fmt: skip
    radius: float = hparam(1.0, "GCD §3, supp. F; GCD configs (uniform_norm, max_norm)",
                           "largest norm of a perturbation of z_sem", low=0.0)  # fmt: skip
    perturbation: str = hparam(
        "isotropic", "GCD configs (uniform_norm); data: cfbench",
        "isotropic: a uniform random direction of z_sem (the paper); data: that direction mapped through the square "
        "root of the covariance of the explained images' z_sem, rescaled to keep its expected norm, so that a "
        "perturbation moves z_sem where the data varies", choices=("isotropic", "data"),
    )  # fmt: skip
    covariance_images: int = hparam(512, "cfbench", "perturbation=data: the first images of the split explained "
                                    "whose z_sem give the covariance (images only, no query)", low=2)  # fmt: skip
    proxy_batch: int = hparam(128, "GCD supp. E", "proxy training batch (and the validation batch)", low=1)
    proxy_lr: float = hparam(1e-3, "GCD supp. E; GCD configs (AdamW lr)", "proxy learning rate", low=0.0)
    proxy_epochs: int = hparam(1024, "GCD configs (n_steps_proxy)", "most proxy epochs per fit", low=1)
    patience: int = hparam(5, "GCD supp. E; GCD configs (val_loss_history_length)",
                           "early stopping: stop when the validation loss exceeds the mean of this many last", low=1)
    proxy_weights: list = hparam([1.0, 3.0], "GCD configs (proxy loss weight_cls, weight_lpips)",
                                 "weights of MSE(logit) and MSE(LPIPS) in the proxy's loss", low=0.0)
    weight_cls: list = hparam([1.0, 0.05], "GCD configs (line_search_weight_cls_list)",
                              "w_cls of each g-direction's CF loss (g1, g2, …)", low=0.0)
    weight_lpips: list = hparam([0.0, 1.0], "GCD configs (line_search_weight_lpips_list)",
                                "w_lpips of each g-direction's CF loss", low=0.0)
    h_directions: int = hparam(30, "GCD §3 eq. 4; GCD configs (n_hessian_eigenvecs)", "h-directions kept", low=0)
    direction: str = hparam(
        "g1", "GCD §4 (Tables 1, 4; Fig. 3)",
        "the direction transferred: g<i>, h<i>, h (the best h per image), h<i>+ (the best of h<i> and later; "
        "Table 4's 'others combined' is h2+) or none (the unedited render: the null edit)",
    )  # fmt: skip
    directions: str = hparam("", "cfbench", "reuse the directions file of an earlier run (its method/directions.pt)")
    steps: int = hparam(64, "GCD §3 eq. 5; GCD `gcd/src/direction_transfer.py` (linspace(-3, 3, 128))",
                        "line-search step sizes after 0", low=1)  # fmt: skip
    max_step: float = hparam(3.0, "GCD `gcd/src/direction_transfer.py`", "largest step along a direction", low=0.0)
    selection_weights: list = hparam([0.05, 1.0], "GCD §4 (Table 4: per image, the lowest CF loss)",
                                     "w_cls, w_lpips of the CF loss that picks among directions", low=0.0)
    network_batch: int = hparam(8, "cfbench", "the DiffAE, the classifier and the LPIPS run on chunks of exactly "
                                "this many images (zero-padded): a result does not depend on the run's batch", low=1)


@dataclass
class Directions:
    """A fit's result: ``vectors`` (fits, D, dim) unit directions to add to z_sem, their
    ``names`` (g1…, h1…), the Hessian ``eigenvalues`` (fits, K), the fit used
    (``chosen``) and what produced them (``info``)."""

    vectors: Tensor
    names: list[str]
    eigenvalues: Tensor
    chosen: int
    info: dict[str, Any]

    def save(self, path: Path) -> None:
        torch.save({"vectors": self.vectors, "names": self.names, "eigenvalues": self.eigenvalues,
                    "chosen": self.chosen, "info": json.dumps(self.info)}, path)  # fmt: skip

    @classmethod
    def load(cls, path: Path) -> Directions:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
            return cls(data["vectors"].float(), list(data["names"]), data["eigenvalues"].float(), int(data["chosen"]),
                       json.loads(data["info"]))  # fmt: skip
        except FileNotFoundError:
            raise CfbenchError(f"{path}: no such directions file.") from None
        except Exception as e:  # noqa: BLE001 - a truncated or foreign file is one clear line
            raise CfbenchError(f"{path} is not a GCD directions file ({type(e).__name__}: {e}).") from None

    def pick(self, spec: str) -> list[int]:
        """Indices (into ``names``) of the directions ``spec`` names."""
        h = [i for i, n in enumerate(self.names) if n.startswith("h")]
        if spec == "h":
            chosen = h
        elif spec.endswith("+"):
            chosen = [i for i in h if int(self.names[i][1:]) >= int(spec[1:-1])]
        else:
            chosen = [i for i, n in enumerate(self.names) if n == spec]
        if not chosen:
            raise CfbenchError(f"gcd: direction={spec} is not among the fitted directions ({', '.join(self.names)}).")
        return chosen


class Proxy(nn.Module):
    """The proxy network of §3: an MLP (``dim``-256-128-64-2, sigmoid activations) from a
    perturbation of z_sem to (the classifier's logit, LPIPS to the source); the LPIPS
    output goes through a sigmoid (GCD `gcd/src/proxies/general_multicomponent_mlp.py`)."""

    def __init__(self, dim: int):
        super().__init__()
        widths = (dim, 256, 128, 64)
        layers: list[nn.Module] = []
        for a, b in zip(widths, widths[1:]):
            layers += [nn.Linear(a, b), nn.Sigmoid()]
        self.net = nn.Sequential(*layers, nn.Linear(64, 2))

    def forward(self, u: Tensor) -> tuple[Tensor, Tensor]:
        out = self.net(u)
        return out[..., 0], torch.sigmoid(out[..., 1])


def cf_loss(logit: Tensor, lpips: Tensor, source_pred: int | Tensor, w_cls: float, w_lpips: float) -> Tensor:
    """Eq. 1 as the official code computes it: w_cls·(±logit) + w_lpips·LPIPS, the logit's
    sign flipped where the class to leave is the negative one."""
    sign = 1 - 2 * (1 - torch.as_tensor(source_pred, device=logit.device)).to(logit.dtype)
    return w_cls * sign * logit + w_lpips * lpips


def train_proxy(u: Tensor, logit: Tensor, lpips: Tensor, config: GCDConfig, generator: torch.Generator
                ) -> tuple[Proxy, list[float]]:  # fmt: skip
    """Algorithm 2: the proxy fitted to (u -> logit, LPIPS) with AdamW, the first
    ``proxy_batch`` of a shuffled order held out for validation, early stopping; returns
    the proxy and its validation loss per epoch."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
        proxy = Proxy(u.shape[1])
    order = torch.randperm(len(u), generator=generator)
    val, train = order[: config.proxy_batch], order[config.proxy_batch :]
    optimizer = torch.optim.AdamW(proxy.parameters(), lr=config.proxy_lr)
    w_logit, w_lpips = config.proxy_weights

    def loss(rows: Tensor) -> Tensor:
        p_logit, p_lpips = proxy(u[rows])
        return w_logit * (p_logit - logit[rows]).pow(2).mean() + w_lpips * (p_lpips - lpips[rows]).pow(2).mean()

    history: list[float] = []
    for _ in range(config.proxy_epochs):
        for batch in train[torch.randperm(len(train), generator=generator)].split(config.proxy_batch):
            optimizer.zero_grad()
            loss(batch).backward()
            optimizer.step()
        with torch.no_grad():
            current = float(loss(val))
        window = history[-config.patience :]
        history.append(current)
        if window and current > sum(window) / len(window):
            break
    return proxy.eval(), history


def proxy_directions(proxy: Proxy, source_pred: int, config: GCDConfig) -> tuple[Tensor, list[str], Tensor]:
    """Eqs. 3-4 at u = 0: the g-directions of every weight pair, then the h-directions,
    as unit vectors to add to z_sem; and the Hessian's eigenvalues sorted by |λ|."""
    dim = proxy.net[0].in_features
    zero = torch.zeros(1, dim)
    vectors, names = [], []
    for k, (w_cls, w_lpips) in enumerate(zip(config.weight_cls, config.weight_lpips), start=1):
        u = zero.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(cf_loss(*proxy(u), source_pred, w_cls, w_lpips).sum(), u)
        vectors.append(-grad[0] / grad.norm().clamp_min(1e-12))  # eq. 3, descending the CF loss
        names.append(f"g{k}")
    hessian = torch.autograd.functional.hessian(lambda u: cf_loss(*proxy(u[None]), source_pred, 1.0, 0.0).sum(),
                                                zero[0])  # eq. 4
    eigenvalues, eigenvectors = torch.linalg.eigh((hessian + hessian.T) / 2)
    order = eigenvalues.abs().argsort(descending=True)[: config.h_directions]
    for k, i in enumerate(order.tolist(), start=1):
        # official: v negated where λ > 0, then z − s·v; as a vector to add: v where λ > 0, −v otherwise
        vectors.append(eigenvectors[:, i] if eigenvalues[i] > 0 else -eigenvectors[:, i])
        names.append(f"h{k}")
    return torch.stack(vectors), names, eigenvalues[order]


def bb_lig(path: Tensor, logits: Tensor) -> Tensor:
    """Eq. 6 on one path of quantised images (P, C, H, W) from x_0 to the counterfactual and
    the classifier's logits on it (P,): (x_0 − x_cf) · mean_k (f_{k+1} − f_k)/(x_{k+1} − x_k),
    0 where a pixel does not change, summed over channels -> (1, H, W)."""
    if len(path) < 2:
        return path.new_zeros(1, *path.shape[-2:])
    dx = path[1:] - path[:-1]
    df = (logits[1:] - logits[:-1]).view(-1, 1, 1, 1).to(path.dtype)
    finite = torch.where(dx != 0, df / torch.where(dx != 0, dx, torch.ones_like(dx)), torch.zeros_like(dx))
    return ((path[0] - path[-1]) * finite.mean(dim=0)).sum(dim=0, keepdim=True)


@METHODS.register("gcd")
class GCD(Method):
    """GCD: proxy-found global directions in a Diffusion Autoencoder's semantic space"""

    Config = GCDConfig
    access = "black-box"
    paper = "Sobieski & Biecek, ECCV 2024"
    row_settings = ("direction",)  # every g- and h-direction is a row of its own (Table 1, Fig. 3, Table 4)
    dataset_configs = {
        # GCD configs celeba: 50 fits × 4,096 renders, 30 h-directions
        "celeba": {"backbone": "diffae-celeba128", "fits": 50, "renders": 4096, "h_directions": 30},
        # GCD configs celebahq: the FFHQ-256 DiffAE, 52 fits × 1,024 renders, 6 h-directions
        "celebahq": {"backbone": "diffae-ffhq256", "fits": 52, "renders": 1024, "h_directions": 6},
        # synthfaces: the DiffAE's z_sem varies in few directions (effective rank 3.4 of 512, mean norm 6.3), and a
        # smile or age is small in it; isotropic perturbations of radius 1 move the classifier on no render and the
        # direction flipped 1.6% of 64 smile images (the suite's earlier run); data-shaped perturbations of radius
        # 10 with steps up to 16: 93.8% of 16 (`cfbench run --method gcd --profile quick --dataset synthfaces --attr
        # smile --n 16 --set perturbation=data --set radius=10 --set max_step=16`); non-smiling images flip late,
        # hence steps up to 20
        "synthfaces": {"backbone": "synthfaces-diffae", "loss_network": "synthfaces-vgg-lpips", "h_directions": 6,
                       "perturbation": "data", "radius": 10.0, "max_step": 20.0},
    }
    profiles = {
        "paper": {},
        "quick": {"fits": 1, "renders": 512, "encode_steps": 50, "render_steps": 20, "steps": 8},
    }
    dataset_profiles = {("synthfaces", "quick"): {"steps": 10}}  # step sizes 2, 4, …, 20

    def __init__(self, config: GCDConfig, device: torch.device | str = "cpu", backbone: Backbone | None = None,
                 loss: nn.Module | None = None):  # fmt: skip
        super().__init__(config, device)
        if not DIRECTION.match(config.direction):
            raise CfbenchError(f"gcd: direction={config.direction} is not g<i>, h<i>, h, h<i>+ or none.")
        if len(config.weight_cls) != len(config.weight_lpips) or not config.weight_cls:
            raise CfbenchError("gcd: weight_cls and weight_lpips must give one weight each per g-direction.")
        if len(config.proxy_weights) != 2 or len(config.selection_weights) != 2:
            raise CfbenchError("gcd: proxy_weights and selection_weights take two values (logit, LPIPS).")
        if config.renders <= config.proxy_batch:  # the proxy's validation batch would take every render
            raise CfbenchError(f"gcd: renders={config.renders} leaves no training data after a validation batch of "
                               f"{config.proxy_batch}; raise renders or lower proxy_batch.")
        self.backbone, self.loss = load_all(
            lambda: backbone or create_backbone(config.backbone, None, config.weights_path or None),
            lambda: loss or LOSS_NETWORKS.get(config.loss_network).create(),
        )
        if self.backbone.record.kind != "diffae":
            raise CfbenchError(f"gcd: backbone {config.backbone} is not a Diffusion Autoencoder.")
        self.backbone.model.to(self.device).eval().requires_grad_(False)
        self.encode_process = self.backbone.record.make_process(f"ddim{config.encode_steps}")
        self.render_process = self.backbone.record.make_process(f"ddim{config.render_steps}")
        self.loss = self.loss.to(self.device).eval()
        self.loss.requires_grad_(False)
        self.fitted: Directions | None = None
        if config.directions:  # read and checked now, before a run writes anything
            self.fitted = Directions.load(Path(config.directions).expanduser())
            self._check_dimension(self.fitted, config.directions)

    def null_edit(self) -> GCD:
        """The render of the unedited inversion, (z, x_T) -> x."""
        return GCD(dataclasses.replace(self.config, direction="none", directions=""), self.device, self.backbone,
                   self.loss)

    def networks(self) -> dict[str, nn.Module]:
        return {f"backbone {self.backbone.name}": self.backbone.model}

    def loss_networks(self) -> dict[str, str]:
        return {"LPIPS": self.config.loss_network}

    # -- the networks, on fixed chunks -------------------------------------------------
    def encode_semantic(self, x: Tensor) -> Tensor:
        """[0, 1] images -> z_sem (the semantic encoder only)."""
        return self._semantic(self.backbone.space.encode(x.to(self.device)))

    def _semantic(self, x_enc: Tensor) -> Tensor:
        with torch.no_grad():
            return fixed_chunks(self.backbone.model.encode, self.config.network_batch, x_enc)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """[0, 1] images -> (z_sem, x_T) (the inversion counts ``encode_steps`` evaluations
        per image)."""
        x_enc = self.backbone.space.encode(x.to(self.device))
        z = self._semantic(x_enc)
        denoiser = self._denoiser(z, self.encode_process)
        return z, ddim_invert(denoiser, x_enc)

    def render(self, z: Tensor, x_T: Tensor, size: tuple[int, int], rows: Tensor, n: int) -> tuple[Tensor, Tensor]:
        """DDIM renders of (z, x_T), quantised to 8 bits in [0, 1] at ``size``; ``rows`` the
        sample each render counts for (of ``n``). Returns the images and the evaluations."""
        denoiser = self._denoiser(z, self.render_process, n)
        out = denoise(denoiser, x_T, rows=rows, sampler="ddim")
        return self.backbone.space.decode(out, size).mul(255).round().div(255), denoiser.evals

    def _denoiser(self, z: Tensor, process, n: int | None = None) -> Denoiser:
        model, size = self.backbone.model, self.config.network_batch
        return Denoiser(lambda x_t, t: fixed_chunks(model, size, x_t, t, z, fills=(None, t[:1], None)), process,
                        len(z) if n is None else n)  # fmt: skip

    def _logits(self, classifier: ClassifierHandle, x: Tensor, rows: Tensor) -> Tensor:
        return fixed_chunk_logits(classifier, x, rows, self.config.network_batch)

    def _lpips(self, x: Tensor, y: Tensor) -> Tensor:
        with torch.no_grad():
            return fixed_chunks(self.loss, self.config.network_batch, x, y)

    def _render_all(self, z: Tensor, x_T: Tensor, size: tuple[int, int], rows: Tensor, n: int,
                    progress: str | None = None) -> tuple[Tensor, Tensor]:  # fmt: skip
        """`render` in groups of ``network_batch`` rows (bounded memory), with a progress bar."""
        step = self.config.network_batch
        images, evals = [], torch.zeros(n, dtype=torch.long)
        for start in tqdm(range(0, len(z), step), desc=progress, unit="batch", leave=False, disable=progress is None):
            part, counted = self.render(z[start : start + step], x_T[start : start + step], size,
                                        rows[start : start + step], n)  # fmt: skip
            images.append(part)
            evals += counted
        return torch.cat(images), evals

    # -- fit: proxies and directions -------------------------------------------------------
    def fit(self, split: Any, classifier: ClassifierHandle, generator: torch.Generator,
            directory: Path) -> dict[str, int]:
        cfg = self.config
        if cfg.directions:  # an earlier run's, read in __init__
            self.fitted.save(directory / DIRECTIONS_FILE)
            return {"diffusion_evals": 0}
        index = cfg.source % len(split)
        ids, images, _ = split.batch([index])
        x_s = quantize(images).float().div(255).to(self.device)  # as the harness gives images to explain
        size = tuple(x_s.shape[-2:])
        z_s, x_T = self.encode(x_s)
        evals = cfg.encode_steps
        one = torch.zeros(1, dtype=torch.long)
        source_pred = int(self._logits(classifier, x_s, one)[0] > 0)
        dim = z_s.shape[1]
        # the proxy sees e; z_sem moves by e @ basis (the identity for the paper's isotropic perturbations)
        basis = self._data_basis(split) if cfg.perturbation == "data" else torch.eye(dim)
        vectors, eigenvalues, scores, histories = [], [], [], []
        names: list[str] = []
        for fit in range(cfg.fits):
            e = torch.randn(cfg.renders, dim, generator=generator)
            e = e / e.norm(dim=1, keepdim=True) * torch.rand(cfg.renders, 1, generator=generator) * cfg.radius
            u = (e @ basis).to(self.device)
            rows = torch.zeros(cfg.renders, dtype=torch.long)
            bar = f"gcd fit {fit + 1}/{cfg.fits}: renders" if self.progress else None
            renders, counted = self._render_all(z_s + u, x_T.expand(cfg.renders, -1, -1, -1), size, rows, 1, bar)
            evals += int(counted.sum())
            logit = self._logits(classifier, renders, rows).float().cpu()
            lpips = self._lpips(renders, x_s.expand_as(renders)).float().cpu()
            proxy, history = train_proxy(e, logit, lpips, cfg, generator)
            fit_vectors, names, fit_eigenvalues = proxy_directions(proxy, source_pred, cfg)
            # a step −∇_e L moves z_sem by −basis·∇_e L (basis symmetric), made unit in z_sem
            fit_vectors = nn.functional.normalize(fit_vectors @ basis, dim=1)
            score, counted = self._source_search(fit_vectors[0], z_s, x_T, x_s, source_pred, classifier)
            evals += counted
            vectors.append(fit_vectors)
            eigenvalues.append(fit_eigenvalues)
            scores.append(score)
            histories.append(history)
        chosen = min(range(cfg.fits), key=lambda f: scores[f])
        self.fitted = Directions(
            torch.stack(vectors), names, torch.stack(eigenvalues), chosen,
            {"source_index": index, "source_id": ids[0], "source_pred": source_pred, "backbone": self.backbone.name,
             "backbone_digest": self.backbone.digest, "dim": dim, "line_search_scores": scores,
             "validation_loss": [h[-1] for h in histories], "proxy_epochs": [len(h) for h in histories],
             "config": cfg.to_dict()},
        )  # fmt: skip
        self.fitted.save(directory / DIRECTIONS_FILE)
        return {"diffusion_evals": evals}

    def _data_basis(self, split: Any) -> Tensor:
        """perturbation=data: C^½·√(dim / tr C), C the covariance of the z_sem of the split's
        first ``covariance_images`` images; a unit random direction e maps to e·C^½·√(dim / tr C),
        whose expected squared norm is 1 again."""
        count = min(self.config.covariance_images, len(split))
        z = torch.cat([self.encode_semantic(split.batch(list(range(start, min(start + 64, count))))[1])
                       for start in range(0, count, 64)]).double().cpu()  # fmt: skip
        covariance = torch.cov(z.T)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        root = eigenvectors @ torch.diag(eigenvalues.clamp_min(0).sqrt()) @ eigenvectors.T
        return (root * (z.shape[1] / covariance.trace()).sqrt()).float()

    def _source_search(self, direction: Tensor, z_s: Tensor, x_T: Tensor, x_s: Tensor, source_pred: int,
                       classifier: ClassifierHandle) -> tuple[float, int]:  # fmt: skip
        """A fit's score: the lowest true CF loss (weights of g1) along its g1 on the source."""
        cfg = self.config
        steps = torch.linspace(0, cfg.max_step, cfg.steps + 1, device=self.device)[1:]
        rows = torch.zeros(len(steps), dtype=torch.long)
        renders, counted = self._render_all(z_s + steps[:, None] * direction.to(self.device),
                                            x_T.expand(len(steps), -1, -1, -1), tuple(x_s.shape[-2:]), rows, 1)
        logit = self._logits(classifier, renders, rows)
        loss = cf_loss(logit, self._lpips(renders, x_s.expand_as(renders)), source_pred, cfg.weight_cls[0],
                       cfg.weight_lpips[0])  # fmt: skip
        return float(loss.min()), int(counted.sum())

    def load_fit(self, directory: Path) -> None:
        self.fitted = Directions.load(directory / DIRECTIONS_FILE)
        self._check_dimension(self.fitted, directory / DIRECTIONS_FILE)

    def _check_dimension(self, found: Directions, where: Any) -> None:
        dim = self.backbone.model.config.enc_out_channels
        if found.vectors.ndim != 3 or found.vectors.shape[-1] != dim:
            raise CfbenchError(f"{where}: directions of size {found.vectors.shape[-1]} for a z_sem of size {dim} "
                               f"({self.backbone.name}).")  # fmt: skip

    # -- transfer -----------------------------------------------------------------------------
    def explain(self, images: Tensor, targets: Tensor, classifier: ClassifierHandle, rng: SampleRNG) -> Counterfactuals:
        cfg = self.config
        n, size = images.shape[0], tuple(images.shape[-2:])
        x = images.to(self.device).detach()
        targets = targets.cpu().long()
        samples = torch.arange(n)
        z, x_T = self.encode(x)
        evals = torch.full((n,), cfg.encode_steps, dtype=torch.long)
        if cfg.direction == "none":
            cf, counted = self.render(z, x_T, size, samples, n)
            logits = self._logits(classifier, cf, samples).cpu()
            return Counterfactuals(cf, (logits > 0).long() == targets,
                                   counters={"diffusion_evals": evals + counted, **classifier.counters()})
        if self.fitted is None:
            raise CfbenchError("gcd: no directions; the run fits them first (or give --set directions=PATH).")
        fitted = self.fitted
        picked = fitted.pick(cfg.direction)
        vectors = fitted.vectors[fitted.chosen][picked].to(self.device)  # (J, dim)
        if cfg.direction.startswith("h"):  # an eigenvector's sign is arbitrary: both sides, as the official ±steps
            vectors = torch.cat([vectors, -vectors])
        # the official reversal: a direction found for the source's class is walked backwards
        # on an image the classifier puts in the other class
        sign = torch.where(1 - targets == fitted.info["source_pred"], 1.0, -1.0).to(self.device)
        steps = torch.linspace(0, cfg.max_step, cfg.steps + 1, device=self.device)
        n_dirs, n_steps = len(vectors), len(steps)
        # rows: (sample, direction, step), step 0 shared by every direction
        moves = sign[:, None, None, None] * vectors[None, :, None, :] * steps[None, None, :, None]
        z_rows = (z[:, None, None, :] + moves)[:, :, 1:].reshape(-1, z.shape[1])
        z_rows = torch.cat([z, z_rows])
        rows = torch.cat([samples, samples.repeat_interleave(n_dirs * (n_steps - 1))])
        renders, counted = self._render_all(z_rows, x_T[rows.to(x_T.device)], size, rows, n)
        evals += counted
        logits = self._logits(classifier, renders, rows).cpu()
        # (n, J, steps) views, step 0 the unedited render
        grid_logits = torch.cat([logits[:n, None, None].expand(n, n_dirs, 1),
                                 logits[n:].view(n, n_dirs, n_steps - 1)], dim=2)  # fmt: skip

        def image(k: int, j: int, s: int) -> Tensor:
            return renders[k] if s == 0 else renders[n + (k * n_dirs + j) * (n_steps - 1) + s - 1]

        flips = (grid_logits > 0).long() == targets[:, None, None]
        flips[:, :, 0] = False
        flipped = flips.any(dim=2)
        # the smallest flipping step of each (image, direction); the largest step where none flips
        first = torch.where(flipped, flips.long().argmax(dim=2), n_steps - 1)
        chosen_dir = torch.zeros(n, dtype=torch.long)
        if n_dirs > 1:  # Table 4: per image, the candidate of lowest CF loss, among those that flip if any do
            candidates = torch.stack([image(k, j, int(first[k, j])) for k in range(n) for j in range(n_dirs)])
            distance = self._lpips(candidates, x.repeat_interleave(n_dirs, 0)).view(n, n_dirs).cpu()
            loss = cf_loss(grid_logits.gather(2, first[..., None])[..., 0], distance, (1 - targets)[:, None],
                           *cfg.selection_weights)  # fmt: skip
            eligible = torch.where(flipped.any(dim=1, keepdim=True), flipped, torch.ones_like(flipped))
            chosen_dir = torch.where(eligible, loss, torch.full_like(loss, float("inf"))).argmin(dim=1)
        cfs, attributions, directions, paths = [], [], [], []
        for k in range(n):
            j, s = int(chosen_dir[k]), int(first[k, chosen_dir[k]])
            path = torch.stack([image(k, j, i) for i in range(s + 1)])
            cfs.append(path[-1])
            attributions.append(bb_lig(path, grid_logits[k, j, : s + 1]))
            directions.append((sign[k] * vectors[j]).cpu())
            paths.append(grid_logits[k, j])
        cf = torch.stack(cfs)
        success = torch.stack([flips[k, chosen_dir[k], first[k, chosen_dir[k]]] for k in range(n)])
        sides = flipped.view(n, -1, len(picked)).any(dim=1)  # an h-direction flips on either of its sides
        per_direction = {fitted.names[i]: sides[:, j] for j, i in enumerate(picked)} if len(picked) > 1 else {}
        return Counterfactuals(
            images=cf, success=success, attributions=torch.stack(attributions), directions=torch.stack(directions),
            path_logits=torch.stack(paths), candidate_success=per_direction,
            counters={"diffusion_evals": evals, **classifier.counters()},
        )  # fmt: skip

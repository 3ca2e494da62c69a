"""Method plugins (`--method`), imported as ``cfbench.methods``.

In-tree methods are listed here lazily (``module:Class`` plus listing metadata) so that
``cfbench list methods`` imports nothing heavy; each module registers its class with
``@METHODS.register(name)``. Third-party packages use the entry-point group
``cfbench.methods``. The mission's methods not written yet are *planned*: asking for
one says so (a plugin registering the name replaces the plan).
"""
from cfbench.registry import Registry

METHODS = Registry("method", "cfbench.methods")

METHODS.lazy(
    "identity",
    "cfbench.methods.identity:Identity",
    description="Returns the input unchanged: the FR≈0 floor of every leaderboard",
    paper="baseline",
    access="black-box",
)
METHODS.lazy(
    "pgd",
    "cfbench.methods.pgd:PGD",
    description="Targeted projected gradient attack in pixel space: the adversarial example VCEs are contrasted with",
    paper="Madry et al., ICLR 2018",
    access="white-box",
)
METHODS.lazy(
    "dime",
    "cfbench.methods.dime:DiME",
    description="DiME: guided diffusion with the classifier's gradients on clean estimates, O(τ²) UNet calls",
    paper="Jeanneret et al., ACCV 2022",
    access="white-box",
)
METHODS.lazy(
    "ace",
    "cfbench.methods.ace:ACE",
    description="ACE: an attack through a diffusion filter, then a masked RePaint refinement",
    paper="Jeanneret et al., CVPR 2023",
    access="white-box",
)
METHODS.lazy(
    "gcd",
    "cfbench.methods.gcd:GCD",
    description="GCD: proxy-found global directions in a Diffusion Autoencoder's semantic space",
    paper="Sobieski & Biecek, ECCV 2024",
    access="black-box",
)

METHODS.lazy(
    "ldce",
    "cfbench.methods.ldce:LDCE",
    description="LDCE: classifier guidance in a latent diffusion model, filtered by consensus with its implicit classifier",
    paper="Farid et al., arXiv 2310.06668",
    access="white-box",
)

__all__ = ["METHODS", "Counterfactuals", "Method", "MethodConfig", "hparam"]


def __getattr__(name: str):
    """Re-export the Method contract lazily: `cfbench list` must not import torch."""
    if name in ("Counterfactuals", "Method", "MethodConfig", "hparam"):
        from cfbench import method

        return getattr(method, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

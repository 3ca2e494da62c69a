"""Registry of the classifiers to explain.

An entry is a factory ``f(attribute: str) -> nn.Module`` whose module maps images in
[0, 1] to one logit per image for that attribute. Datasets name their default
classifier per attribute (`Dataset.classifiers`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from cfbench.errors import CfbenchError
from cfbench.registry import Registry

if TYPE_CHECKING:
    from torch import nn

CLASSIFIERS = Registry("classifier", "cfbench.classifiers")
CLASSIFIERS.lazy(
    "synthfaces-densenet",
    "cfbench.zoo:synthfaces_densenet",
    description="synthfaces DenseNet-BC (k=12), one logit per attribute, trained by cfbench zoo",
    paper="cfbench zoo (stands in for the DiME/ACE CelebA DenseNet-121)",
)
CLASSIFIERS.lazy(
    "synthfaces-shortcut-smile",
    "cfbench.zoo:synthfaces_shortcut_smile",
    description="synthfaces Smiling classifier trained where Rosy_Cheeks always co-occurs (planted shortcut)",
    paper="cfbench zoo",
)


def load_classifier(name: str, attribute: str) -> nn.Module:
    """The classifier network ``name`` for ``attribute``, in eval mode."""
    factory = CLASSIFIERS.get(name)
    supported = getattr(factory, "attributes", None)
    if supported is not None and attribute not in supported:
        raise CfbenchError(f"classifier {name!r} does not predict {attribute!r} (it predicts {', '.join(supported)}).")
    return factory(attribute).eval()

"""synthfaces: the embedded procedural face world (no downloads, fully deterministic).

- :mod:`.spec` — the attribute model: 14 CelebA-named binary attributes, a causal graph
  with conditional probability tables, exact marginals and correlation matrix.
- :mod:`.scene` — :class:`Identity`, :class:`Nuisance`, :class:`SceneParams`: everything
  that determines one image, as editable dataclasses.
- :mod:`.render` — ``render_scenes(scenes) -> (N, 3, H, W)``, ``render(identity,
  attributes, nuisance) -> (H, W, 3)``, ``region_masks(scene)``.
- :mod:`.dataset` — :class:`SynthFaces`, splits rendered on
  demand by index, labels without rendering, and image-level interventions::

      split = SynthFaces().split("test")
      sample = split[0]                                     # Sample(id, image, labels)
      edited = split.intervene(0, {"Rosy_Cheeks": "flip"})  # same face, cheeks toggled

See docs/synthfaces.md.
"""
from cfbench.datasets.synthfaces import spec
from cfbench.datasets.synthfaces.dataset import SynthFaces, SynthFacesSplit
from cfbench.datasets.synthfaces.render import region_masks, render, render_scenes
from cfbench.datasets.synthfaces.scene import Identity, Nuisance, SceneParams
from cfbench.datasets.synthfaces.spec import ATTRIBUTES, correlation_matrix, marginals, sample_attributes

__all__ = [
    "ATTRIBUTES",
    "Identity",
    "Nuisance",
    "SceneParams",
    "SynthFaces",
    "SynthFacesSplit",
    "correlation_matrix",
    "marginals",
    "region_masks",
    "render",
    "render_scenes",
    "sample_attributes",
    "spec",
]

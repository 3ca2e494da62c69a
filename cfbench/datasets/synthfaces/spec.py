"""The generative model of synthfaces attributes: a small causal Bayesian network.

Fourteen binary attributes, named and ordered as in CelebA's ``list_attr_celeba.txt``,
are drawn by ancestral sampling: root Bernoulli variables first, then each child from
its conditional probability table (CPT) given its parents. The network is small
(2**14 joint states), so marginals and the Pearson correlation matrix are computed
*exactly* by enumerating the joint distribution; they are the ground truth against
which correlation-based metrics (Correlation Difference, MNAC) can be checked.

Generative graph (each line: parents ──► child; roots have no parents)::

    roots:  Male    Smiling    Wearing_Hat    Pale_Skin (isolated)

    Male ─────────────────────────────► Young
    Smiling ──────────────────────────► Mouth_Slightly_Open
    Male, Young ──────────────────────► Eyeglasses
    Male, Young ──────────────────────► Mustache
    Male, Young ──────────────────────► Heavy_Makeup
    Heavy_Makeup, Male ───────────────► Rosy_Cheeks
    Male, Wearing_Hat, Young ─────────► Bald
    Bald, Male ───────────────────────► Bangs
    Bald, Male ───────────────────────► Black_Hair
    Bald, Black_Hair, Male, Young ────► Blond_Hair   (Black_Hair = 1 ⇒ Blond_Hair = 0)

The CPTs are in :data:`NODES` (``describe()`` prints them as tables). Smiling has no path to Rosy_Cheeks, so the
two are independent (ρ = 0) in the natural distribution: a *shortcut* training
distribution can later force them to co-occur and the shortcut is then purely spurious.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping

import numpy as np

#: The attributes, in CelebA's ``list_attr_celeba.txt`` order (the label order).
ATTRIBUTES: tuple[str, ...] = (
    "Bald",
    "Bangs",
    "Black_Hair",
    "Blond_Hair",
    "Eyeglasses",
    "Heavy_Makeup",
    "Male",
    "Mouth_Slightly_Open",
    "Mustache",
    "Pale_Skin",
    "Rosy_Cheeks",
    "Smiling",
    "Wearing_Hat",
    "Young",
)
INDEX: dict[str, int] = {name: i for i, name in enumerate(ATTRIBUTES)}


@dataclass(frozen=True)
class Node:
    """One binary variable: ``table[parent values]`` is P(node = 1 | parents)."""

    name: str
    parents: tuple[str, ...]
    table: Mapping[tuple[int, ...], float]
    note: str = ""

    def prob(self, parent_values: Mapping[str, np.ndarray]) -> np.ndarray:
        """P(node = 1) for arrays of parent values (vectorised lookup in the CPT)."""
        lut = np.array([self.table[key] for key in itertools.product((0, 1), repeat=len(self.parents))])
        code = np.zeros(np.shape(next(iter(parent_values.values()))) if parent_values else (), dtype=np.int64)
        for p in self.parents:
            code = code * 2 + parent_values[p].astype(np.int64)
        return lut[code]


def _cpt(parents: tuple[str, ...], fn) -> dict[tuple[int, ...], float]:
    return {key: float(fn(**dict(zip(parents, key)))) for key in itertools.product((0, 1), repeat=len(parents))}


#: The network, in a topological (ancestral sampling) order.
NODES: tuple[Node, ...] = (
    Node("Male", (), {(): 0.42}, "root; CelebA: 0.42"),
    Node("Smiling", (), {(): 0.48}, "root; CelebA: 0.48 (balanced query)"),
    Node("Wearing_Hat", (), {(): 0.06}, "root"),
    Node("Pale_Skin", (), {(): 0.06}, "root, isolated (ground-truth zero correlations)"),
    Node(
        "Young",
        ("Male",),
        _cpt(("Male",), lambda Male: 0.60 if Male else 0.82),
        "women are more often labelled young (moderate Male ↔ not Young)",
    ),
    Node(
        "Mouth_Slightly_Open",
        ("Smiling",),
        _cpt(("Smiling",), lambda Smiling: 0.72 if Smiling else 0.24),
        "strong Smiling ↔ Mouth_Slightly_Open",
    ),
    Node(
        "Eyeglasses",
        ("Male", "Young"),
        _cpt(("Male", "Young"), lambda Male, Young: (0.05 if Male else 0.02) if Young else (0.25 if Male else 0.12)),
        "Young ↔ no glasses",
    ),
    Node(
        "Mustache",
        ("Male", "Young"),
        _cpt(("Male", "Young"), lambda Male, Young: (0.10 if Young else 0.28) if Male else 0.0),
        "only men; older men more often",
    ),
    Node(
        "Heavy_Makeup",
        ("Male", "Young"),
        _cpt(("Male", "Young"), lambda Male, Young: 0.01 if Male else (0.72 if Young else 0.40)),
        "strong Heavy_Makeup ↔ not Male",
    ),
    Node(
        "Bald",
        ("Male", "Wearing_Hat", "Young"),
        _cpt(
            ("Male", "Wearing_Hat", "Young"),
            lambda Male, Wearing_Hat, Young: 0.0 if Wearing_Hat else ((0.04 if Young else 0.30) if Male else 0.005),
        ),
        "Young → not Bald; never labelled bald under a hat (not visible there)",
    ),
    Node(
        "Bangs",
        ("Bald", "Male"),
        _cpt(("Bald", "Male"), lambda Bald, Male: 0.0 if Bald else (0.08 if Male else 0.24)),
        "no fringe without hair",
    ),
    Node(
        "Black_Hair",
        ("Bald", "Male"),
        _cpt(("Bald", "Male"), lambda Bald, Male: 0.10 if Bald else (0.28 if Male else 0.22)),
        "",
    ),
    Node(
        "Blond_Hair",
        ("Bald", "Black_Hair", "Male", "Young"),
        _cpt(
            ("Bald", "Black_Hair", "Male", "Young"),
            lambda Bald, Black_Hair, Male, Young: 0.0
            if Black_Hair
            else (0.02 if Bald else (0.05 if Male else (0.36 if Young else 0.22))),
        ),
        "hair colours exclusive: Black_Hair = 1 ⇒ Blond_Hair = 0; blond mostly young women",
    ),
    Node(
        "Rosy_Cheeks",
        ("Heavy_Makeup", "Male"),
        _cpt(("Heavy_Makeup", "Male"), lambda Heavy_Makeup, Male: 0.24 if Heavy_Makeup else (0.03 if Male else 0.08)),
        "blush goes with make-up; independent of Smiling",
    ),
)
NODE: dict[str, Node] = {n.name: n for n in NODES}

assert set(NODE) == set(ATTRIBUTES) and len(NODES) == len(ATTRIBUTES)
#: Column of the uniform-variate matrix that drives each node (attribute order).
_ORDER = [INDEX[n.name] for n in NODES]


def _check_overrides(overrides: Mapping[str, int] | None) -> dict[str, int]:
    overrides = dict(overrides or {})
    unknown = [k for k in overrides if k not in INDEX]
    if unknown:
        raise KeyError(f"unknown synthfaces attribute(s) {unknown}; known: {', '.join(ATTRIBUTES)}")
    for k, v in overrides.items():
        if int(v) not in (0, 1):
            raise ValueError(f"attribute override {k}={v!r}: use 0 or 1")
    return {k: int(v) for k, v in overrides.items()}


def attributes_from_uniforms(u: np.ndarray, overrides: Mapping[str, int] | None = None) -> np.ndarray:
    """Ancestral sampling driven by given uniforms ``u`` of shape (n, 14) in [0, 1).

    Column ``INDEX[name]`` of ``u`` decides attribute ``name``: it is 1 iff
    ``u < P(name = 1 | parents)``. ``overrides`` ({name: 0/1}) is Pearl's do():
    the named variables are fixed and their *descendants* are drawn from their CPTs
    given the fixed values. Returns an (n, 14) uint8 array in :data:`ATTRIBUTES` order.
    """
    u = np.asarray(u, dtype=np.float64)
    overrides = _check_overrides(overrides)
    values: dict[str, np.ndarray] = {}
    for node in NODES:
        if node.name in overrides:
            values[node.name] = np.full(u.shape[0], overrides[node.name], dtype=np.uint8)
        else:
            p = node.prob({q: values[q] for q in node.parents}) if node.parents else node.table[()]
            values[node.name] = (u[:, INDEX[node.name]] < p).astype(np.uint8)
    return np.stack([values[a] for a in ATTRIBUTES], axis=1)


def sample_attributes(
    rng: np.random.Generator, n: int, overrides: Mapping[str, int] | None = None
) -> np.ndarray:
    """``n`` attribute vectors, (n, 14) uint8 in :data:`ATTRIBUTES` order.

    ``overrides`` intervenes in the generative model (do-operator): e.g.
    ``{"Young": 0}`` gives old people whose glasses, baldness, hair colour … follow
    from being old. To change one attribute *of an image* and nothing else, use
    :meth:`SynthFacesSplit.intervene` instead.
    """
    return attributes_from_uniforms(rng.random((n, len(ATTRIBUTES))), overrides)


@lru_cache(maxsize=8)
def _joint(overrides_key: tuple[tuple[str, int], ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    overrides = dict(overrides_key)
    states = np.array(list(itertools.product((0, 1), repeat=len(ATTRIBUTES))), dtype=np.uint8)
    prob = np.ones(len(states))
    for node in NODES:
        x = states[:, INDEX[node.name]]
        if node.name in overrides:
            prob *= x == overrides[node.name]
            continue
        p = node.prob({q: states[:, INDEX[q]] for q in node.parents}) if node.parents else node.table[()]
        prob *= np.where(x == 1, p, 1.0 - p)
    keep = prob > 0
    return states[keep], prob[keep]


def joint_distribution(overrides: Mapping[str, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every attribute vector with non-zero probability and its exact probability.

    Returns ``(states, prob)``: states (K, 14) uint8 in :data:`ATTRIBUTES` order and
    prob (K,) float64 summing to 1. ``overrides`` applies do() as in
    :func:`attributes_from_uniforms`.
    """
    states, prob = _joint(tuple(sorted(_check_overrides(overrides).items())))
    return states.copy(), prob.copy()


def marginals(overrides: Mapping[str, int] | None = None) -> dict[str, float]:
    """Exact P(attribute = 1) for each attribute."""
    states, prob = joint_distribution(overrides)
    m = prob @ states
    return {a: float(m[i]) for i, a in enumerate(ATTRIBUTES)}


def correlation_matrix(overrides: Mapping[str, int] | None = None) -> tuple[tuple[str, ...], np.ndarray]:
    """Exact Pearson correlation matrix of the 14 binary attributes.

    Returns ``(names, matrix)``, names in :data:`ATTRIBUTES` order. An attribute
    fixed by ``overrides`` has zero variance; its row and column are NaN (diagonal 1).
    """
    states, prob = joint_distribution(overrides)
    x = states.astype(np.float64)
    mean = prob @ x
    cov = (x * prob[:, None]).T @ x - np.outer(mean, mean)
    sd = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = cov / np.outer(sd, sd)
    corr[sd == 0, :] = np.nan
    corr[:, sd == 0] = np.nan
    np.fill_diagonal(corr, 1.0)
    return ATTRIBUTES, corr


def _fmt(v: float) -> str:
    return "0.00" if abs(v) < 0.005 else f"{v:+.2f}"


def describe() -> str:
    """The CPTs, marginals and correlation matrix as Markdown (used by docs/synthfaces.md)."""
    lines = ["Root variables:", "", "| attribute | P(= 1) | note |", "|---|---|---|"]
    lines += [f"| {n.name} | {n.table[()]:.3g} | {n.note} |" for n in NODES if not n.parents]
    for node in (n for n in NODES if n.parents):
        lines += ["", f"**{node.name}** given {', '.join(node.parents)} ({node.note or 'no note'}):", ""]
        lines += ["| " + " | ".join(node.parents) + f" | P({node.name} = 1) |", "|---" * (len(node.parents) + 1) + "|"]
        for key in itertools.product((0, 1), repeat=len(node.parents)):
            lines.append("| " + " | ".join(map(str, key)) + f" | {node.table[key]:.3g} |")
    m = marginals()
    lines += ["", "Marginals:", "", "| attribute | P(= 1) |", "|---|---|"]
    lines += [f"| {a} | {m[a]:.4f} |" for a in ATTRIBUTES]
    names, corr = correlation_matrix()
    lines += ["", "Pearson correlation matrix (columns numbered as the rows):", ""]
    lines += ["| | " + " | ".join(str(i + 1) for i in range(len(names))) + " |", "|---" * (len(names) + 1) + "|"]
    for i, (n, row) in enumerate(zip(names, corr)):
        lines.append(f"| {i + 1} {n} | " + " | ".join("1" if j == i else _fmt(v) for j, v in enumerate(row)) + " |")
    return "\n".join(lines)


__all__ = [
    "ATTRIBUTES",
    "INDEX",
    "NODES",
    "Node",
    "attributes_from_uniforms",
    "correlation_matrix",
    "describe",
    "joint_distribution",
    "marginals",
    "sample_attributes",
]

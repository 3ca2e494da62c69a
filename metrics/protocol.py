"""Evaluation protocols: the named set of metrics a run computes (`--protocol`).

The full written protocol (which images, subsets, networks and seeds each metric
uses) lives in PROTOCOL.md; the name recorded in every run says which one applied.
"""
from cfbench.errors import CfbenchError

PROTOCOLS: dict[str, tuple[str, ...]] = {
    "cfbench-v1": ("fr", "fr_null", "l1", "l2"),
    "cfbench-v2": (
        "fr", "fr_null", "fid", "sfid", "fid_plus", "fva", "fs", "mnac", "cd", "cd_spec", "cout", "s3", "sigma_l",
        "l1", "l2", "l1_plus", "precision", "recall",
    ),
}


def protocol_metrics(name: str) -> tuple[str, ...]:
    if name not in PROTOCOLS:
        raise CfbenchError(f"Unknown protocol {name!r}. Known: {', '.join(PROTOCOLS)}.")
    return PROTOCOLS[name]

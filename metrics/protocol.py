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
#: v3 (the synthfaces v2 world): KID joins, for realism at small n, and σL on the official scripts'
#: subset; CD's reference correlations come from every train label (v2 records sampled 20,000 rows).
_V2 = PROTOCOLS["cfbench-v2"]
PROTOCOLS["cfbench-v3"] = (*_V2[:5], "kid", *_V2[5:13], "sigma_l_agree", *_V2[13:])


def protocol_metrics(name: str) -> tuple[str, ...]:
    if name not in PROTOCOLS:
        raise CfbenchError(f"Unknown protocol {name!r}. Known: {', '.join(PROTOCOLS)}.")
    return PROTOCOLS[name]

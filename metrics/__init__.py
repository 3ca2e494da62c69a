"""Metric plugins, imported as ``cfbench.metrics``; third parties use the
entry-point group ``cfbench.metrics``."""
from cfbench.registry import Registry

METRICS = Registry("metric", "cfbench.metrics")

METRICS.lazy(
    "fr",
    "cfbench.metrics.flip_ratio:FlipRatio",
    description="Flip ratio: % of counterfactuals the classifier assigns to the target",
    paper="LDCE App. E eq. 12",
)
METRICS.lazy(
    "fr_null",
    "cfbench.metrics.flip_ratio:NullFlipRatio",
    description="Null-edit flip ratio: % of the method's unguided edits the classifier assigns to the target",
    paper="cfbench (the null edit)",
)
METRICS.lazy(
    "l1",
    "cfbench.metrics.distance:L1",
    description="Mean L1 distance between input and counterfactual, [0,1] pixels",
    paper="LDCE App. E eqs. 16-17",
)
METRICS.lazy(
    "l2",
    "cfbench.metrics.distance:L2",
    description="Mean L2 distance between input and counterfactual, [0,1] pixels",
    paper="LDCE App. E eqs. 16-17",
)
METRICS.lazy(
    "l1_plus",
    "cfbench.metrics.distance:L1Successful",
    description="Mean absolute pixel change per entry (L1 / CHW) on [0,1] pixels, successful counterfactuals",
    paper="DiME Table 2 (l1)",
)
METRICS.lazy(
    "mask_area",
    "cfbench.metrics.mask:MaskArea",
    description="Mean % of pixels inside the method's edit mask",
    paper="ACE §3.2 (the refinement mask)",
)
for _name, _class, _what, _table in (
    ("attribution_sparseness", "AttributionSparseness", "Gini index of the method's attribution maps (BB-LIG)",
     "Quantus Sparseness"),
    ("attribution_complexity", "AttributionComplexity", "Entropy of the method's attribution maps (BB-LIG)",
     "Quantus Complexity"),
    ("ad_sparseness", "ADSparseness", "Gini index of the absolute-difference maps |x - x_cf|", "AD, Quantus Sparseness"),
    ("ad_complexity", "ADComplexity", "Entropy of the absolute-difference maps |x - x_cf|", "AD, Quantus Complexity"),
):
    METRICS.lazy(_name, f"cfbench.metrics.attribution:{_class}", description=_what,
                 paper=f"GCD supp. D.4, Table 9 ({_table})")
METRICS.lazy(
    "fid",
    "cfbench.metrics.fid:FID",
    description="FID between all originals and the successful counterfactuals (features network)",
    paper="DiME §4.1; LDCE App. E eq. 20",
)
METRICS.lazy(
    "sfid",
    "cfbench.metrics.fid:SplitFID",
    description="Split FID: originals of one random half vs successful counterfactuals of the other, 10 splits",
    paper="ACE §4; LDCE App. E",
)
METRICS.lazy(
    "fid_plus",
    "cfbench.metrics.fid:FIDPlus",
    description="FID+: FID of equal-size random subsets (20% of the samples) of the successful counterfactuals, 10 subsets",
    paper="DiME §4.5, Table 2",
)
METRICS.lazy(
    "sigma_l_agree",
    "cfbench.metrics.diversity:SigmaLAgree",
    description="Diversity on the samples whose success agrees across the seeds (official compute_LPIPS.py)",
    paper="DiME §4.3 eq. 11 as DiME/ACE `compute_LPIPS.py` computes it",
)
METRICS.lazy(
    "kid",
    "cfbench.metrics.kid:KID",
    description="KID: unbiased polynomial-kernel MMD² between all originals and the successful counterfactuals",
    paper="Bińkowski et al., ICLR 2018 §3 (cfbench: realism at small n)",
)
METRICS.lazy(
    "precision",
    "cfbench.metrics.precision_recall:Precision",
    description="Precision: fraction of successful counterfactuals inside the originals' k-NN feature manifold (k=3)",
    paper="LDCE App. E eqs. 21-22 (Kynkäänniemi et al. 2019)",
)
METRICS.lazy(
    "recall",
    "cfbench.metrics.precision_recall:Recall",
    description="Recall: fraction of originals inside the successful counterfactuals' k-NN feature manifold (k=3)",
    paper="LDCE App. E eqs. 21, 23 (Kynkäänniemi et al. 2019)",
)
METRICS.lazy(
    "fva",
    "cfbench.metrics.face:FaceVerificationAccuracy",
    description="Face verification accuracy: % of successful counterfactuals with identity cosine similarity > 0.5",
    paper="DiME §4.1; ACE §4",
)
METRICS.lazy(
    "fs",
    "cfbench.metrics.face:FaceSimilarity",
    description="Face similarity: mean identity-embedding cosine similarity of original and successful counterfactual",
    paper="ACE §4",
)
METRICS.lazy(
    "mnac",
    "cfbench.metrics.oracle:MNAC",
    description="Mean number of oracle attributes changed (query included), successful counterfactuals",
    paper="DiME §4.1; LDCE App. E eq. 18",
)
METRICS.lazy(
    "query_changed",
    "cfbench.metrics.oracle:QueryChanged",
    description="% of successful counterfactuals whose query attribute the oracle also sees changed",
    paper="cfbench",
)
METRICS.lazy(
    "shortcut_changed",
    "cfbench.metrics.oracle:ShortcutChanged",
    description="% of successful counterfactuals that change the classifier's planted shortcut (oracle)",
    paper="cfbench",
)
METRICS.lazy(
    "cd",
    "cfbench.metrics.oracle:CorrelationDifference",
    description="Correlation difference vs train-label correlations, successful counterfactuals",
    paper="DiME §4.2 eq. 10; LDCE App. E eq. 19",
)
METRICS.lazy(
    "cd_spec",
    "cfbench.metrics.oracle:CorrelationDifferenceSpec",
    description="Correlation difference vs the exact label correlations of the dataset's generative model",
    paper="DiME §4.2 eq. 10 (reference from the synthfaces spec)",
)
METRICS.lazy(
    "cout",
    "cfbench.metrics.cout:COUT",
    description="Counterfactual transition: AUPC(target) - AUPC(original class) under pixel insertion, in [-1, 1]",
    paper="ACE §4 (Khorram & Fuxin 2022); LDCE App. E eqs. 13-14",
)
METRICS.lazy(
    "s3",
    "cfbench.metrics.s3:SimSiamSimilarity",
    description="SimSiam similarity: mean projector cosine of original and counterfactual, correct originals",
    paper="ACE §4; LDCE App. E eq. 15",
)
METRICS.lazy(
    "sigma_l",
    "cfbench.metrics.diversity:SigmaL",
    description="Diversity: mean pairwise LPIPS between counterfactuals of runs with other seeds, all samples",
    paper="DiME §4.3 eq. 11",
)

__all__ = ["METRICS"]

"""Networks the metrics need (attribute oracles, face-identity encoders, self-supervised
encoders, FID feature extractors), imported as ``cfbench.oracles``."""

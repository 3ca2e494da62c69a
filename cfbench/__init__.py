"""cfbench: a benchmark suite for visual counterfactual explanations of image classifiers."""

__version__ = "0.1.0"

"""The paper's experiment matrix (single- vs multi-fidelity training recipes):
``run_experiment(ExperimentSettings(...))`` is ``mfgnn experiment`` from Python."""

from .matrix import ExperimentSettings, base_config, run_experiment

__all__ = ["ExperimentSettings", "base_config", "run_experiment"]

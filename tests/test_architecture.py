"""The package's shape: one home per concept, commands as modules, configs that check
themselves, ``python -m mfgnn``, no dead helpers, no module over ~400 lines."""

from __future__ import annotations

import dataclasses
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from mfgnn.errors import ConfigError

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "mfgnn"


def test_python_dash_m_mfgnn_is_the_command():
    out = subprocess.run([sys.executable, "-m", "mfgnn", "--help"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for name in ("train", "evaluate", "data", "experiment", "demo"):
        assert name in out.stdout


def test_every_command_is_a_module_with_add_arguments_and_run():
    from mfgnn.commands import COMMANDS

    for name, module in COMMANDS.items():
        mod = importlib.import_module(f"mfgnn.commands.{module}")
        assert callable(mod.add_arguments) and callable(mod.run) and mod.HELP, name


@pytest.mark.parametrize("section,values,message", [
    ("mfgnn.training.config:TrainConfig", {"lr": -1.0}, "train.lr must be > 0"),
    ("mfgnn.training.config:TrainConfig", {"optimizer": "sgd"}, "train: unknown optimizer 'sgd'"),
    ("mfgnn.training.config:TrainConfig", {"batch_size": 0}, "train.batch_size must be >= 1"),
    ("mfgnn.loss:LossConfig", {"forces_weight": -1}, "loss.forces_weight must be >= 0"),
    ("mfgnn.loss:LossConfig", {"energy_weight": {"f12": "x"}}, "loss.energy_weight.f12"),
    ("mfgnn.data.splits:SplitConfig", {"train": 1.5}, "split.train: a fraction"),
    ("mfgnn.nn.config:HIPNNConfig", {"cutoff": "far"}, "model.cutoff must be a number"),
])
def test_every_config_section_checks_itself_when_made(section, values, message):
    module, name = section.split(":")
    cls = getattr(importlib.import_module(module), name)
    with pytest.raises(ConfigError, match=message):
        cls(**values)


def test_one_unknown_key_check_for_every_section():
    from mfgnn.config import config_from_dict

    for section, typo, hint in (("train", "lrate", "'lr'"), ("loss", "forces_weigth", "'forces_weight'"),
                                ("split", "trian", "'train'"), ("model", "n_feature", "'n_features'")):
        with pytest.raises(ConfigError, match=f"{section}: unknown key '{typo}'; did you mean {hint}"):
            config_from_dict({"data": "d.yaml", "labels": {"a": ["energy"]}, section: {typo: 1}})


def test_removed_duplicates_and_dead_helpers_stay_gone():
    import mfgnn.calculator
    import mfgnn.loss

    for module in ("mfgnn.io", "mfgnn.run", "mfgnn.quickstart", "mfgnn.training.metrics",
                   "mfgnn.data.fileio", "mfgnn.experiment.command"):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(module)
    assert not hasattr(mfgnn.loss.MultiFidelityLoss, "force_fidelities")
    assert not hasattr(mfgnn.calculator.MFGNNCalculator, "get_energies_all")


def test_library_functions_take_typed_settings_not_argparse():
    from mfgnn.experiment import ExperimentSettings, run_experiment

    fields = {f.name for f in dataclasses.fields(ExperimentSettings)}
    assert {"data", "low", "high", "train", "valid", "test", "out", "seeds"} <= fields
    assert list(__import__("inspect").signature(run_experiment).parameters) == ["settings", "log"]


def test_one_small_model_definition():
    from mfgnn.commands import demo
    from mfgnn.experiment import matrix
    from mfgnn.presets import SMALL_MODEL

    assert matrix.base_config(None)["model"] == SMALL_MODEL
    assert not hasattr(demo, "DEMO_MODEL") and not hasattr(matrix, "DEFAULT_MODEL")


def test_no_module_is_much_over_400_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 420}
    assert long == {}

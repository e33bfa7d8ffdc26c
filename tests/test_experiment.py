"""``mfgnn experiment``: naming, skipping impossible experiments, metrics, resume, and a
smoke run of the whole matrix on the real H2CO MP2 / CCSD(T)-F12 data."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from conftest import experiment_args

from mfgnn.cli import main
from mfgnn.errors import ConfigError
from mfgnn.experiment.metrics import mean_ci95, pairwise_difference_rmse
from mfgnn.experiment.plan import plan_experiments


def test_names_follow_the_paper():
    names = [e.name for e in plan_experiments("mp2", "ccsdt", high_has_forces=True)]
    assert names[:2] == ["SF-ccsdt/E", "SF-ccsdt/EF"]
    assert names[-1] == "SF-mp2/EF"
    for base in ("MF-mp2/E-ccsdt/E", "MF-mp2/EF-ccsdt/E", "MF-mp2/EF-ccsdt/EF"):
        for mode in ("independent", "delta", "tethered"):
            assert f"{base}[{mode}]" in names
    assert len(names) == 3 + 9


def test_impossible_experiments_are_skipped():
    names = [e.name for e in plan_experiments("dft", "cc", high_has_forces=False,
                                              heads=("delta",))]
    assert names == ["SF-cc/E", "MF-dft/E-cc/E[delta]", "MF-dft/EF-cc/E[delta]", "SF-dft/EF"]
    no_low_forces = [e.name for e in plan_experiments("a", "b", False, low_has_forces=False,
                                                      heads=("independent",))]
    assert no_low_forces == ["SF-b/E", "MF-a/E-b/E[independent]"]


def test_labels_and_modes_of_a_planned_experiment():
    plan = {e.name: e for e in plan_experiments("lo", "hi", True, heads=("tethered",))}
    e = plan["MF-lo/EF-hi/E[tethered]"]
    assert e.labels == {"lo": ["energy", "forces"], "hi": ["energy"]} and e.heads == "tethered"
    assert "/" not in e.folder and "[" not in e.folder
    with pytest.raises(ConfigError, match="unknown head mode 'deltas'"):
        plan_experiments("lo", "hi", True, heads=("deltas",))


def test_only_keeps_the_named_experiments_and_rejects_unknown_names():
    kept = plan_experiments("lo", "hi", True, heads=("delta", "tethered"),
                            only=("MF-lo/EF-hi/E[delta]", "SF-hi/E"))
    assert [e.name for e in kept] == ["SF-hi/E", "MF-lo/EF-hi/E[delta]"]
    with pytest.raises(ConfigError, match=r"'SF-hi/EF' not in the matrix.*it has: SF-hi/E,"):
        plan_experiments("lo", "hi", False, heads=("delta",), only=("SF-hi/EF",))


def test_pairwise_difference_rmse_matches_brute_force():
    rng = np.random.default_rng(0)
    errors = rng.normal(size=40)
    groups = rng.integers(0, 3, size=40)
    pairs = [(errors[i] - errors[j]) ** 2
             for i, j in itertools.combinations(range(40), 2) if groups[i] == groups[j]]
    assert pairwise_difference_rmse(errors, groups) == pytest.approx(math.sqrt(np.mean(pairs)))
    # a constant offset (a wrong reference energy) does not change conformer differences
    assert pairwise_difference_rmse(errors + 5.0, groups) == pytest.approx(
        pairwise_difference_rmse(errors, groups))
    assert pairwise_difference_rmse(np.ones(3), np.arange(3)) is None


def test_confidence_interval():
    stats = mean_ci95([1.0, 2.0, 3.0])
    assert stats["mean"] == 2.0 and stats["runs"] == [1.0, 2.0, 3.0]
    assert stats["ci95"] == pytest.approx(4.303 * 1.0 / math.sqrt(3))
    assert mean_ci95([5.0])["ci95"] == 0.0


@pytest.fixture()
def spec(h2co_spec):
    return h2co_spec


def test_smoke_run_writes_results_and_resumes(spec, tmp_path, capsys):
    out = tmp_path / "exp"
    args = experiment_args(spec, tmp_path, "--seeds", "2")
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["units"] == {"energy": "meV", "forces": "meV/A"}
    assert results["fidelities"] == {"low": "mp2", "high": "f12"}
    exps = results["experiments"]
    assert set(exps) == {"SF-f12/E", "SF-f12/EF", "MF-mp2/E-f12/E[delta]",
                         "MF-mp2/EF-f12/E[delta]", "MF-mp2/EF-f12/EF[delta]", "SF-mp2/EF"}
    mf = exps["MF-mp2/EF-f12/E[delta]"]
    # high-level forces are scored although no MF-.../E model saw them
    assert len(mf["high"]["forces_rmse"]["runs"]) == 2 and mf["high"]["forces_rmse"]["mean"] > 0
    assert {"energy_rmse", "energy_mae", "forces_mae", "delta_e_rmse"} <= set(mf["high"])
    assert "low" in mf and "low" not in exps["SF-f12/E"]
    gap = results["baseline"]["forces_gap_rmse"]
    assert 100 < gap < 300          # MP2 vs CCSD(T)-F12 forces differ by ~0.18 eV/Å
    assert "energy_gap_rmse" in results["baseline"]
    for name in ("results.md", "forces_rmse.png", "energy_rmse.png", "forces_parity.png"):
        assert (out / name).stat().st_size > 0
    assert "SF-f12/E" in (out / "results.md").read_text()
    # the default paradigm is the matrix alone (--paradigms mfl)
    assert list(results["paradigms"]) == ["mfl"]
    assert "Training paradigms" not in (out / "results.md").read_text()
    capsys.readouterr()

    # re-running skips every finished run and reproduces the results
    before = (out / "results.json").read_text()
    assert main(args) == 0
    log = capsys.readouterr().err
    assert log.count("(done before)") == 12
    assert json.loads((out / "results.json").read_text()) == json.loads(before)


def test_unknown_fidelity_is_a_clear_error(spec, tmp_path, capsys):
    code = main(["experiment", "--data", str(spec), "--low", "mp2", "--high", "ccsdt",
                 "--train", "10", "--valid", "5", "--test", "5", "--out", str(tmp_path / "x")])
    assert code == 2
    assert "--high 'ccsdt' is not a fidelity" in capsys.readouterr().err


def test_low_model_used_as_high_is_shifted_by_self_energies_of_the_training_split(spec, tmp_path):
    """The "SF-low/EF used as high" score shifts the low energies by self-energies
    fitted on the training split, like the raw-gap baseline: test labels never enter."""
    from mfgnn.data import load_dataset, make_split
    from mfgnn.experiment.baselines import baselines, level_references
    from mfgnn.experiment.matrix import _run_one

    dataset = load_dataset(spec)
    split = make_split(len(dataset), 200, 20, 100, seed=0)
    rows = np.asarray(split.test)
    # an offset on the test rows' F12 energies only: a shift fitted on the training
    # split leaves it in the error; one fitted on the test rows would absorb it
    dataset.energies[rows, dataset.fidelities.index("f12")] += 0.050
    refs = level_references(dataset, rows)
    run = tmp_path / "run"
    run.mkdir()
    energy, forces = refs.of("mp2")
    # a perfect MP2 model: its predictions are the MP2 labels
    np.savez(run / "predictions.npz", fidelities=np.array(["mp2"]),
             energy=energy[:, None], forces=forces[:, None, :])
    result = _run_one({}, run, dataset, split, "mp2", "f12")
    expected = baselines(dataset, split, "mp2", "f12")
    assert result["high"]["energy_rmse"] == pytest.approx(expected["energy_gap_rmse"], rel=1e-9)
    assert result["high"]["forces_rmse"] == pytest.approx(expected["forces_gap_rmse"], rel=1e-9)
    assert result["high"]["energy_rmse"] > 45.0  # the 50 meV test-only offset is seen


def test_config_sections_override_the_presets_key_by_key(tmp_path):
    import yaml

    from mfgnn.experiment.matrix import base_config
    from mfgnn.presets import EXPERIMENT_TRAIN, SMALL_MODEL

    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump({"model": {"n_features": 16},
                                    "train": {"max_time": 180.0}}))
    base = base_config(path)
    assert base["train"] == {**EXPERIMENT_TRAIN, "max_time": 180.0}
    assert base["train"]["lr"] == EXPERIMENT_TRAIN["lr"] and base["train"]["scheduler"] == "cosine"
    assert base["model"] == {**SMALL_MODEL, "n_features": 16}
    assert SMALL_MODEL["n_features"] == 48  # the presets themselves are not changed

    path.write_text("train: 5\n")
    with pytest.raises(ConfigError, match="base.yaml.*'train'.*mapping"):
        base_config(path)


def test_runs_without_forces_take_the_energy_only_train_keys(tmp_path):
    import yaml

    from mfgnn.experiment.matrix import ExperimentSettings, _run_config, base_config
    from mfgnn.presets import EXPERIMENT_ENERGY_ONLY_TRAIN, EXPERIMENT_TRAIN

    def lrs(base) -> dict:
        settings = ExperimentSettings(data="x", low="mp2", high="f12", train=1, valid=1,
                                      test=1, out=tmp_path)
        plan = plan_experiments("mp2", "f12", True, True, ("delta",))
        return {e.name: _run_config(base, tmp_path, tmp_path, e, 0, settings)["train"]["lr"]
                for e in plan}

    presets = lrs(base_config(None))
    energy_only = {"SF-f12/E", "MF-mp2/E-f12/E[delta]"}
    assert {n for n, lr in presets.items() if lr == EXPERIMENT_ENERGY_ONLY_TRAIN["lr"]} \
        == energy_only
    assert {lr for n, lr in presets.items() if n not in energy_only} == {EXPERIMENT_TRAIN["lr"]}

    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump({"train": {"lr": 1e-3}}))  # a given lr is every run's
    assert set(lrs(base_config(path)).values()) == {1e-3}
    path.write_text(yaml.safe_dump({"train": {"lr": 1e-3}, "energy_only": {"lr": 5e-4}}))
    given = lrs(base_config(path))
    assert {given[n] for n in energy_only} == {5e-4}
    assert {lr for n, lr in given.items() if n not in energy_only} == {1e-3}
    path.write_text(yaml.safe_dump({"energy_only": {"lrr": 5e-4}}))
    with pytest.raises(ConfigError, match="base.yaml.*energy_only.*lrr"):
        base_config(path)


def test_lfhe_runs_take_the_presets_low_level_energy_weight(tmp_path):
    import yaml

    from mfgnn.config import config_from_dict
    from mfgnn.experiment.matrix import ExperimentSettings, _run_config, base_config
    from mfgnn.presets import EXPERIMENT_LFHE_LOW_ENERGY_WEIGHT

    settings = ExperimentSettings(data="x", low="mp2", high="f12", train=1, valid=1,
                                  test=1, out=tmp_path)
    plan = plan_experiments("mp2", "f12", True, True, ("delta",),
                            paradigms=("mfl", "tl", "delta"))

    def weights(base) -> dict:
        return {e.name: _run_config(base, tmp_path, tmp_path, e, 0, settings)
                .get("loss", {}).get("energy_weight") for e in plan}

    assert {e.paradigm for e in plan} >= {"mfl", "tl", "delta"}
    presets = weights(base_config(None))
    assert presets.pop("MF-mp2/EF-f12/E[delta]") == {"mp2": EXPERIMENT_LFHE_LOW_ENERGY_WEIGHT}
    assert "MF-mp2/EF-f12/EF[delta]" in presets and "SF-f12/E" in presets
    assert set(presets.values()) == {None}  # the other runs, staged paradigms included
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump({"loss": {"energy_weight": 2.0}}))  # given: every run's
    assert set(weights(base_config(path)).values()) == {2.0}
    lfhe = next(e for e in plan if e.name == "MF-mp2/EF-f12/E[delta]")
    loss = config_from_dict(_run_config(base_config(None), tmp_path, tmp_path, lfhe, 0,
                                        settings)).loss  # a valid run configuration
    assert loss.weight("energy", "mp2") == EXPERIMENT_LFHE_LOW_ENERGY_WEIGHT
    assert loss.weight("energy", "f12") == 1.0

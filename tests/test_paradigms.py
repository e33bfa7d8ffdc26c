"""``mfgnn experiment --paradigms``: names, impossible paradigms skipped with a message,
unknown names refused, and a smoke run of every paradigm on H2CO that resumes."""

from __future__ import annotations

import json

import numpy as np
import torch
import pytest
from conftest import experiment_args

from mfgnn.cli import main
from mfgnn.commands.experiment import _names
from mfgnn.errors import ConfigError
from mfgnn.experiment.matrix import ExperimentSettings
from mfgnn.experiment.paradigms import ParadigmOptions
from mfgnn.experiment.plan import PARADIGMS, plan_experiments

STAGED = ["TL-mp2/EF→f12/E", "Frozen-mp2/EF→f12/E", "Δ-mp2/EF+f12/E",
          "Reptile-k5-mp2/EF,f12/E"]
FOLDERS = ("TL-mp2_EF-to-f12_E", "Frozen-mp2_EF-to-f12_E", "Delta-mp2_EF+f12_E",
           "Reptile-k5-mp2_EF+f12_E")


def test_names_of_the_staged_paradigms():
    plan = plan_experiments("mp2", "f12", True, heads=("delta",), paradigms=PARADIGMS)
    names = [e.name for e in plan]
    assert names[:2] == ["SF-f12/E", "SF-f12/EF"] and names[-4:] == STAGED
    assert [e.paradigm for e in plan[-4:]] == ["tl", "frozen", "delta", "reptile"]
    for e in plan[-4:]:
        assert e.labels == {"mp2": ["energy", "forces"], "f12": ["energy"]}
        assert e.folder.isascii() and "/" not in e.folder and "," not in e.folder
    assert len({e.folder for e in plan}) == len(plan)
    only = plan_experiments("mp2", "f12", True, paradigms=("reptile", "tl"), reptile_k=1)
    assert [e.name for e in only] == ["TL-mp2/EF→f12/E", "Reptile-k1-mp2/EF,f12/E"]
    # the default is today's matrix
    assert all(e.paradigm == "mfl" for e in plan_experiments("mp2", "f12", True))


def test_experiments_selects_within_the_matrix_and_staged_paradigms_stay():
    plan = plan_experiments("mp2", "f12", True, heads=("delta",), only=("SF-f12/E",),
                            paradigms=("mfl", "delta"))
    assert [e.name for e in plan] == ["SF-f12/E", "Δ-mp2/EF+f12/E"]
    with pytest.raises(ConfigError, match=r"'SF-f12/E' not in the matrix.*it has: TL-"):
        plan_experiments("mp2", "f12", True, only=("SF-f12/E",), paradigms=("tl",))
    # an experiment name with a comma survives the command line's comma split
    assert _names("SF-f12/E,Reptile-k5-mp2/EF,f12/E,Δ-mp2/EF+f12/E", experiments=True) == (
        "SF-f12/E", "Reptile-k5-mp2/EF,f12/E", "Δ-mp2/EF+f12/E")
    assert _names("mfl, tl,delta") == ("mfl", "tl", "delta")


def test_impossible_paradigms_are_skipped_with_a_message():
    skipped: list[str] = []
    plan = plan_experiments("dft", "cc", False, low_has_forces=False, heads=("delta",),
                            paradigms=PARADIGMS, skipped=skipped)
    assert [e.name for e in plan] == ["SF-cc/E", "MF-dft/E-cc/E[delta]"]
    assert len(skipped) == 4
    assert skipped[0] == ("skipping tl: TL-dft/EF→cc/E needs dft forces, which the data "
                          "does not have")
    assert "skipping frozen: Frozen-dft/EF→cc/E" in skipped[1]
    assert "skipping reptile: Reptile-k5-dft/EF,cc/E" in skipped[3]


def test_unknown_paradigm_is_refused_with_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown paradigm 'reptil'; did you mean "
                                          r"'reptile'\? \(choose one of mfl, tl, frozen, delta, "
                                          r"reptile\)"):
        ExperimentSettings(data="x", low="a", high="b", train=1, valid=1, test=1,
                           out=tmp_path, paradigms=("tl", "reptil"))
    with pytest.raises(ConfigError, match="name at least one"):
        plan_experiments("a", "b", True, paradigms=())
    with pytest.raises(ConfigError, match="meta: unknown key 'kk'"):
        ParadigmOptions.from_base({"meta": {"kk": 3}})
    with pytest.raises(ConfigError, match="delta.low_share"):
        ParadigmOptions.from_base({"delta": {"low_share": 1.5}})


@pytest.fixture()
def spec(h2co_spec):
    return h2co_spec


def test_without_low_forces_the_command_says_what_it_skips(tmp_path, shared_data, capsys):
    folder = shared_data / "mp2_ccsdt"
    spec = tmp_path / "noforces.yaml"
    spec.write_text("fidelities:\n"
                    f"  mp2: {{path: {folder / 'ch2o_mp2_avtz_3601.npz'}, keys: "
                    "{positions: R, numbers: Z, energy: E, forces: null}}\n"
                    f"  f12: {{path: {folder / 'ch2o_ccf12_avtz_3601.npz'}}}\n")
    code = main(["experiment", "--data", str(spec), "--low", "mp2", "--high", "f12",
                 "--train", "10", "--valid", "5", "--test", "5", "--paradigms", "tl,delta",
                 "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2
    assert "skipping tl: TL-mp2/EF→f12/E needs mp2 forces" in err
    assert "skipping delta: Δ-mp2/EF+f12/E needs mp2 forces" in err
    assert "nothing to run" in err


def test_unknown_paradigm_on_the_command_line(spec, tmp_path, capsys):
    code = main(["experiment", "--data", str(spec), "--low", "mp2", "--high", "f12",
                 "--train", "10", "--valid", "5", "--test", "5", "--paradigms", "mfl,maml",
                 "--out", str(tmp_path / "x")])
    assert code == 2
    assert "unknown paradigm 'maml'" in capsys.readouterr().err


def test_smoke_run_of_every_paradigm_writes_results_and_resumes(spec, tmp_path, capsys):
    out = tmp_path / "exp"
    args = experiment_args(spec, tmp_path, "--seeds", "1", "--experiments", "SF-f12/E",
                           "--paradigms", "mfl,tl,frozen,delta,reptile")
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    exps = results["experiments"]
    assert list(exps) == ["SF-f12/E", *STAGED]
    for name in STAGED:
        high = exps[name]["high"]
        assert high["forces_rmse"]["mean"] > 0 and high["energy_rmse"]["mean"] > 0
        assert "low" in exps[name]          # every staged model keeps its low level
    assert set(results["paradigms"]) == set(PARADIGMS)
    runs = out / "runs"
    for folder in FOLDERS:
        data = np.load(runs / folder / "seed0" / "predictions.npz")
        assert [str(f) for f in data["fidelities"]] == ["mp2", "f12"]
        assert np.isfinite(data["forces"]).all()
    assert (runs / "TL-mp2_EF-to-f12_E" / "seed0" / "pretrain" / "model.pt").is_file()
    assert (runs / "Reptile-k5-mp2_EF+f12_E" / "seed0" / "meta" / "meta.json").is_file()
    text = (out / "results.md").read_text()
    assert "Reptile-k5-mp2/EF,f12/E" in text and "## Training paradigms" in text
    for name in ("forces_rmse.png", "energy_rmse.png"):
        assert (out / name).stat().st_size > 0
    capsys.readouterr()

    # a rerun skips every finished run
    before = json.loads((out / "results.json").read_text())
    assert main(args) == 0
    log = capsys.readouterr().err
    assert log.count("(done before)") == 5
    for name in STAGED:
        assert f"{name} seed 0" in log
    assert json.loads((out / "results.json").read_text()) == before

    # interrupted after their stages' checkpoints: each paradigm resumes its stages
    for folder in FOLDERS:
        for name in ("predictions.npz", "model.pt"):
            (runs / folder / "seed0" / name).unlink()
    assert main(args) == 0
    assert capsys.readouterr().err.count("(done before)") == 1
    assert json.loads((out / "results.json").read_text()) == before


def test_frozen_paradigm_keeps_the_low_model_and_fits_the_high_head(spec, tmp_path):
    """``frozen``: the final model predicts the low level exactly as its pre-trained low
    model does (the trunk and the low head are untouched), and its high level differs
    from the low one by a correction fitted to the high energies (head refit report)."""
    from mfgnn.model_file import load_model
    from mfgnn.training.finetune import parameter_groups

    args = experiment_args(spec, tmp_path, "--seeds", "1", "--paradigms", "frozen")
    assert main(args) == 0
    run = tmp_path / "exp" / "runs" / "Frozen-mp2_EF-to-f12_E" / "seed0"
    low_model, model = load_model(run / "pretrain" / "model.pt"), load_model(run / "model.pt")
    assert model.fidelities == ("mp2", "f12")
    before, after = low_model.state_dict(), model.state_dict()
    for name in parameter_groups(model)["trunk"]:
        assert torch.equal(after[name], before[name]), name
    from mfgnn.data import load_dataset
    from mfgnn.experiment.predict import predict
    rows = np.arange(5)
    e_low, f_low = predict(low_model, load_dataset(spec), rows)
    e_both, f_both = predict(model, load_dataset(spec), rows)
    np.testing.assert_allclose(e_both[:, 0], e_low[:, 0], atol=1e-9)
    np.testing.assert_allclose(f_both[:, 0], f_low[:, 0], atol=1e-6)  # float32 forces
    assert np.abs(f_both[:, 1] - f_both[:, 0]).max() > 1e-3
    refit = json.loads((run / "head_refit.json").read_text())
    assert [r["fidelity"] for r in refit] == ["f12"]

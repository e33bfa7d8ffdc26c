"""Model and checkpoint files: ``model.pt`` carries its format version, the package
version and the metadata (fidelities, units, elements, self-energies, trained labels); a
model file of another version, a truncated, corrupt or inconsistent one, and a corrupt or
foreign ``checkpoint.pt`` on ``--resume`` are each one clear ``CheckpointError`` naming
the file.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _reliability import error_line, h2co_spec, run_values, write_config

import mfgnn
from mfgnn.cli import main
from mfgnn.config import config_from_dict
from mfgnn.errors import CheckpointError
from mfgnn.model_file import MODEL_FORMAT_VERSION, load_model
from mfgnn.training.setup import setup_run
from mfgnn.training.build import build_trainer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def spec(tmp_path, shared_data) -> Path:
    return h2co_spec(tmp_path, shared_data)


# --------------------------------------------------------------------------- model files


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, shared_data) -> Path:
    folder = tmp_path_factory.mktemp("model")
    spec = h2co_spec(folder, shared_data)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        build_trainer(setup_run(config_from_dict(run_values(spec, epochs=1))), folder / "run",
                log=None).fit()
    finally:
        torch.set_num_threads(before)
    return folder / "run" / "model.pt"


def test_model_file_carries_version_and_metadata(model_file):
    payload = torch.load(model_file, map_location="cpu", weights_only=False)
    assert payload["format"] == "mfgnn-model"
    assert payload["format_version"] == MODEL_FORMAT_VERSION
    assert payload["mfgnn_version"] == mfgnn.__version__
    model = load_model(model_file)
    meta = model.metadata
    assert meta["fidelities"] == ["mp2", "f12"] and meta["elements"] == [1, 6, 8]
    assert meta["units"] == {"energy": "eV", "length": "Angstrom", "forces": "eV/Angstrom"}
    assert meta["trained_labels"] == {"mp2": ["energy", "forces"], "f12": ["energy"]}
    assert meta["forces_trained"] == ["mp2"]
    assert meta["mfgnn_version"] == mfgnn.__version__
    assert meta["format_version"] == MODEL_FORMAT_VERSION
    for t, fid in enumerate(meta["fidelities"]):
        for k, z in enumerate(meta["elements"]):
            assert meta["self_energies"][fid][str(z)] == float(model.self_energies[t, k])
    assert any(model.self_energies[t].abs().sum() > 0 for t in range(2))


def _rewrite(src: Path, dst: Path, change) -> Path:
    payload = torch.load(src, map_location="cpu", weights_only=False)
    change(payload)
    torch.save(payload, dst)
    return dst


def test_incompatible_model_version_names_both_versions(model_file, tmp_path, capsys):
    def future(payload):
        payload["format_version"] = MODEL_FORMAT_VERSION + 1
        payload["mfgnn_version"] = "9.0.0"

    path = _rewrite(model_file, tmp_path / "model.pt", future)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    message = str(info.value)
    assert str(path) in message
    assert f"format version {MODEL_FORMAT_VERSION + 1} (written by mfgnn 9.0.0)" in message
    assert f"this mfgnn ({mfgnn.__version__}) reads version {MODEL_FORMAT_VERSION}" in message
    for name in ("config.yaml", "split.json"):
        (tmp_path / name).write_bytes((model_file.parent / name).read_bytes())
    assert main(["evaluate", str(tmp_path)]) == 2
    err = error_line(capsys.readouterr().err)
    assert err.startswith("mfgnn: error: ") and "reads version" in err


def test_truncated_or_corrupt_model_file_fails_clearly(model_file, tmp_path):
    data = model_file.read_bytes()
    cases = {"empty": b"", "half": data[: len(data) // 2], "tail": data[:-40],
             "text": b"not a model\n"}
    for name, content in cases.items():
        path = tmp_path / f"{name}.pt"
        path.write_bytes(content)
        with pytest.raises(CheckpointError, match=rf"{name}\.pt: not a readable model file"):
            load_model(path)
    # damaged weights inside an intact archive: torch.load reads them, the checksum does not
    payload = torch.load(model_file, map_location="cpu", weights_only=False)
    weight = max((t for t in payload["state_dict"].values()
                  if t.is_floating_point() and t.numel() > 16 and float(t.std()) > 0),
                 key=lambda t: t.numel())
    needle = weight.numpy().tobytes()[:64]
    at = data.find(needle)
    assert at > 0
    damaged = bytearray(data)
    damaged[at:at + 16] = bytes(16)
    (tmp_path / "flipped.pt").write_bytes(bytes(damaged))
    with pytest.raises(CheckpointError, match=r"flipped\.pt: the weights do not match their "
                       r"checksum .* corrupt"):
        load_model(tmp_path / "flipped.pt")
    # hyper-parameters that do not fit the weights, a missing block, another format
    bad = _rewrite(model_file, tmp_path / "wide.pt",
                   lambda p: p["hparams"]["config"].update(n_features=32))
    with pytest.raises(CheckpointError, match=r"wide\.pt: the model file's hyper-parameters and "
                       r"weights do not fit together"):
        load_model(bad)
    bad = _rewrite(model_file, tmp_path / "nometa.pt", lambda p: p.pop("metadata"))
    with pytest.raises(CheckpointError, match=r"nometa\.pt: model file lacks metadata"):
        load_model(bad)
    torch.save({"epoch": 3}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other\.pt: not an mfgnn model file"):
        load_model(tmp_path / "other.pt")


def test_corrupt_checkpoint_on_resume_fails_clearly(spec, tmp_path, capsys):
    config = write_config(tmp_path / "run.yaml", run_values(spec, epochs=1))
    run = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run)]) == 0
    data = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    assert main(["train", str(config), "--out", str(run), "--resume"]) == 2
    err = error_line(capsys.readouterr().err)
    assert err.startswith(f"mfgnn: error: {run / 'checkpoint.pt'}: cannot resume") and "corrupt" in err
    # a checkpoint of another configuration (wider model) is refused the same way
    wide = run_values(spec, epochs=2)
    wide["model"]["n_features"] = 32
    (run / "checkpoint.pt").write_bytes(data)
    assert main(["train", str(write_config(tmp_path / "wide.yaml", wide)), "--out", str(run),
                 "--resume"]) == 2
    assert "cannot resume" in error_line(capsys.readouterr().err)

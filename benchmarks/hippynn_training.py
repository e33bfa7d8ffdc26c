"""The reference side of ``vs_hippynn_widerange.py``: one HIP-NN trained with hippynn
0.1.3's own API (graph nodes, ``assemble_for_training``, ``Database``,
``setup_and_train``), as its examples do, with a time budget added to its controller.

``hippynn`` is None when the package is not installed.
"""

from __future__ import annotations

import os
import time
import warnings

import numpy as np

from mfgnn.data import Split

#: hippynn's schedule as in its examples: halve the rate after 8 epochs without
#: improvement, stop after 30
HIPPYNN_PLATEAU_PATIENCE = 8
HIPPYNN_TERMINATION_PATIENCE = 30
HIPPYNN_HINT = "pip install hippynn==0.1.3"

os.environ.setdefault("HIPPYNN_USE_CUSTOM_KERNELS", "False")  # no triton/cupy/numba here
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")  # if --hippynn-kernels pytorch
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    try:
        import hippynn
        from hippynn.experiment.controllers import PatienceController
    except ImportError:
        hippynn = None

if hippynn is not None:
    class TimeBudgetController(PatienceController):
        """hippynn's PatienceController that also ends training once ``max_time`` seconds
        have passed since it was made (checked after every epoch, as mfgnn does).
        Module level, since hippynn pickles the controller into its structure file."""

        _state_vars = PatienceController._state_vars + ("max_time",)

        def __init__(self, *a, max_time: float, **kw):
            super().__init__(*a, **kw)
            self.max_time, self.start = max_time, time.monotonic()

        def push_epoch(self, epoch, better_model, metric, _print=print):
            go_on = super().push_epoch(epoch, better_model, metric, _print=_print)
            if time.monotonic() - self.start >= self.max_time:
                _print(f"time budget of {self.max_time} s reached")
                return False
            return go_on


def run_hippynn(args, labels: dict, data, split: Split, train_cfg: dict, seed: int,
                low: str, high: str, max_epochs: int) -> dict:
    """Train one hippynn model as its examples do, with the ``labels`` of levels ``low``
    and ``high`` (arrays ``E_<level>``, ``F_<level>`` of ``data``); returns its ``high``
    test predictions (energies, forces), epochs and training seconds."""
    import torch

    from hippynn.experiment import SetupParams, assemble_for_training, setup_and_train
    from hippynn.experiment.controllers import RaiseBatchSizeOnPlateau
    from hippynn.graphs import Predictor, inputs, networks, physics, targets
    from hippynn.graphs.nodes.loss import MAELoss, MSELoss
    from hippynn.pretraining import hierarchical_energy_initialization

    hippynn.custom_kernels.set_custom_kernels(args.hippynn_kernels)
    hippynn.settings.PROGRESS = None
    hippynn.settings.WARN_LOW_DISTANCES = False
    torch.set_default_dtype(torch.float32)
    torch.manual_seed(seed)
    species = inputs.SpeciesNode(db_name="Z")
    positions = inputs.PositionsNode(db_name="R")
    network = networks.Hipnn("hipnn_model", (species, positions), module_kwargs={
        "possible_species": [0, *sorted(set(int(z) for z in np.unique(data["Z"])))],
        "n_features": 48, "n_sensitivities": 20, "dist_soft_min": args.soft_min,
        "dist_soft_max": args.soft_max, "dist_hard_max": args.cutoff,
        "n_interaction_layers": 2, "n_atom_layers": 2})
    heads, losses, total = {}, {}, None
    for level in (low, high):  # SF: the MP2 head only; MF: an HF and an MP2 head
        if level not in labels:
            continue
        henergy = targets.HEnergyNode(f"HEnergy_{level}", network,
                                      module_kwargs={"first_is_interacting": False})
        force = physics.GradientNode(f"forces_{level}", (henergy, positions), sign=-1)
        henergy.mol_energy.db_name, force.db_name = f"E_{level}", f"F_{level}"
        heads[level] = (henergy, force)
        for what, node in (("energy", henergy), ("forces", force)):
            if what in labels.get(level, ()):
                rmse, mae = MSELoss.of_node(node) ** (1 / 2), MAELoss.of_node(node)
                key = f"{'E' if what == 'energy' else 'F'}-{level}"
                losses[f"{key}-RMSE"], losses[f"{key}-MAE"] = rmse, mae
                total = rmse + mae if total is None else total + rmse + mae
    losses["LossTotal"] = total  # hierarchicality weight 0 (the paper's code)
    training_modules, db_info = assemble_for_training(losses["LossTotal"], losses)

    keep = np.concatenate([split.train, split.valid, split.test])
    arrays = {"indices": keep, "Z": data["Z"][keep].astype(np.int64),
              "R": data["R"][keep].astype(np.float32)}
    shift = {}
    for level in (low, high):  # a constant per level (one composition): float32-safe
        shift[level] = float(np.mean(data[f"E_{level}"][split.train]))
        arrays[f"E_{level}"] = (data[f"E_{level}"][keep] - shift[level]).astype(np.float32)
        arrays[f"F_{level}"] = data[f"F_{level}"][keep].astype(np.float32)
    database = hippynn.databases.Database(arrays, seed=seed, quiet=True, pin_memory=False,
                                          **db_info)
    database.make_explicit_split("test", torch.as_tensor(split.test))
    database.make_explicit_split("valid", torch.as_tensor(split.valid))
    database.split_the_rest("train")
    for level in heads:
        hierarchical_energy_initialization(heads[level][0], database, trainable_after=False)

    optimizer = torch.optim.Adam(training_modules.model.parameters(), lr=args.lr)
    scheduler = RaiseBatchSizeOnPlateau(optimizer=optimizer, max_batch_size=args.batch_size,
                                        patience=HIPPYNN_PLATEAU_PATIENCE,
                                        factor=train_cfg.get("scheduler_factor", 0.5))
    controller = TimeBudgetController(
        optimizer=optimizer, scheduler=scheduler, batch_size=args.batch_size,
        eval_batch_size=args.batch_size, max_epochs=max_epochs, stopping_key="LossTotal",
        termination_patience=HIPPYNN_TERMINATION_PATIENCE, max_time=args.max_time)
    tracker = setup_and_train(training_modules, database,
                              SetupParams(controller=controller, device="cpu"))

    henergy, force = heads[high]
    predictor = Predictor.from_graph(training_modules.model,
                                     additional_outputs=[henergy.mol_energy, force])
    test = split.test
    out = predictor(Z=torch.as_tensor(data["Z"][test], dtype=torch.int64),
                    R=torch.as_tensor(data["R"][test], dtype=torch.float32), batch_size=256)
    energy = out[henergy.mol_energy].double().numpy().reshape(-1) + shift[high]
    forces = out[force].double().numpy()
    return {"energy": energy, "forces": forces, "epochs": len(tracker.epoch_times),
            "train_s": float(sum(tracker.epoch_times))}

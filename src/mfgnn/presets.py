"""Named settings shared by the demo, ``mfgnn experiment`` and the benchmarks.

``SMALL_MODEL`` is the one small HIP-NN-TS used wherever a quick, laptop-sized model is
wanted: 48 features, 2 interaction blocks of 2 atom layers, 20 sensitivities, tensor
order 1, shifted softplus. The budgets say how long each job trains.
"""

from __future__ import annotations

#: The small model of the demo, the experiment matrix and the benchmarks.
SMALL_MODEL = {"n_features": 48, "n_interactions": 2, "n_atom_layers": 2,
               "n_sensitivities": 20, "cutoff": 6.5, "tensor_order": 1,
               "activation": "shifted_softplus"}

#: ``mfgnn experiment``: 90 s of training per run (the whole matrix on one small
#: molecule, 3 seeds, in about an hour on 2 CPU cores).
EXPERIMENT_TRAIN = {"max_epochs": 300, "batch_size": 32, "lr": 2.0e-3, "patience": 30,
                    "scheduler_patience": 8, "max_time": 90.0}

#: ``mfgnn demo``: two models, at most 150 s each.
DEMO_TRAIN = {"max_epochs": 150, "batch_size": 32, "lr": 2.0e-3, "patience": 30,
              "scheduler_patience": 8, "seed": 0, "max_time": 150.0}

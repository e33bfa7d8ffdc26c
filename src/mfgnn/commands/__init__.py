"""The ``mfgnn`` commands, one module each (``train``, ``finetune``, ``evaluate``,
``data``, ``experiment``, ``demo``).

Each module has ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``;
``run`` only turns the parsed arguments into typed calls of library functions, which
never see an argparse ``Namespace``.
"""

from __future__ import annotations

#: Command name -> module name, in the order ``mfgnn --help`` lists them.
COMMANDS = {"train": "train", "finetune": "finetune", "evaluate": "evaluate",
            "data": "data", "experiment": "experiment", "demo": "demo"}

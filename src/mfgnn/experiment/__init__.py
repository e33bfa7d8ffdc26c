"""The paper's experiment matrix (single- vs multi-fidelity training recipes) as a command."""

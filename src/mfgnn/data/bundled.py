"""The bundled demo dataset: 1400 H2CO structures at MP2 and CCSD(T)-F12 (see
``mfgnn/demo/README.md`` for source, licence and how it was cut)."""

from __future__ import annotations

from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent.parent / "demo"


def demo_spec_path() -> Path:
    """Path of the bundled demo dataset spec (``mfgnn/demo/h2co.yaml``; fidelities mp2, f12)."""
    return DEMO_DIR / "h2co.yaml"

"""results.md (tables in the shape of the paper's Tables 2–4) and PNG figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..fileio import write_text_atomic

_COLUMNS = [("energy_rmse", "E RMSE (meV)"), ("forces_rmse", "F RMSE (meV/Å)"),
            ("delta_e_rmse", "ΔE RMSE (meV)"), ("energy_mae", "E MAE (meV)"),
            ("forces_mae", "F MAE (meV/Å)"), ("forces_p99", "F P99 (meV/Å)")]


def _cell(metric: dict | None) -> str:
    if not metric:
        return "–"
    if len(metric["runs"]) < 2:
        return f"{metric['mean']:.2f}"
    return f"{metric['mean']:.2f} ± {metric['ci95']:.2f}"


def markdown_tables(results: dict) -> str:
    """One table per fidelity role (high first): experiments × metrics, mean ± 95 % CI."""
    fids = results["fidelities"]
    lines = [f"# Multi-fidelity experiment: {fids['low']} → {fids['high']}", ""]
    sizes = results.get("sizes", {})
    if sizes:
        lines.append(f"train {sizes['train']}, valid {sizes['valid']}, test "
                     f"{sizes['test']}, {sizes['seeds']} seed(s); mean ± 95 % CI over seeds.")
        lines.append("")
    for role in ("high", "low"):
        rows = [(name, exp[role]) for name, exp in results["experiments"].items() if role in exp]
        if not rows:
            continue
        cols = [(k, label) for k, label in _COLUMNS if any(k in m for _, m in rows)]
        lines.append(f"## Errors against {fids[role]} ({role} level), test split")
        lines.append("")
        lines.append("| experiment | " + " | ".join(label for _, label in cols) + " |")
        lines.append("|---|" + "---|" * len(cols))
        for name, metrics in rows:
            lines.append(f"| {name} | " + " | ".join(_cell(metrics.get(k)) for k, _ in cols) + " |")
        lines.append("")
    lines += _by_energy_table(results)
    lines += _paradigm_lines(results)
    base = results.get("baseline", {})
    if base:
        lines.append(f"## Baselines: {fids['low']} used as {fids['high']}, test split")
        lines.append("")
        if "forces_gap_rmse" in base:
            lines.append(f"- force gap RMS(F_{fids['low']} − F_{fids['high']}): "
                         f"{base['forces_gap_rmse']:.1f} meV/Å")
        if "energy_gap_rmse" in base:
            lines.append(f"- energy gap after per-level self-energies: "
                         f"{base['energy_gap_rmse']:.2f} meV")
        lines.append("")
    return "\n".join(lines)


def _by_energy_table(results: dict) -> list[str]:
    """High-level force RMSE per bin of energy above the minimum (only when the test
    split spans more than one bin: wide-range data)."""
    gap = results.get("baseline", {}).get("by_energy", {})
    rows = [(name, exp["high"].get("by_energy", {})) for name, exp in
            results["experiments"].items() if "high" in exp]
    bins = list(dict.fromkeys(list(gap) + [b for _, m in rows for b in m]))
    if len(bins) < 2:
        return []
    lines = [f"## {results['fidelities']['high']} force RMSE (meV/Å) by energy above the "
             "minimum, test split", "",
             "| experiment | " + " | ".join(f"{b} (n={gap.get(b, {}).get('n_structures', '?')})"
                                           for b in bins) + " |",
             "|---|" + "---|" * len(bins)]
    for name, by in rows:
        lines.append(f"| {name} | " + " | ".join(_cell(by.get(b, {}).get("forces_rmse"))
                                                 for b in bins) + " |")
    lines.append("| raw gap | " + " | ".join(
        f"{gap[b]['forces_rmse']:.1f}" if "forces_rmse" in gap.get(b, {}) else "–"
        for b in bins) + " |")
    lines.append("")
    return lines


def _paradigm_lines(results: dict) -> list[str]:
    """What each training paradigm did with the budget T (only when the results hold
    more than the multi-fidelity matrix)."""
    paradigms = results.get("paradigms", {})
    if set(paradigms) <= {"mfl"}:
        return []
    names = {"mfl": "SF / MF", "tl": "TL", "frozen": "Frozen", "delta": "Δ", "reptile": "Reptile"}
    lines = ["## Training paradigms (same split, seeds and wall-clock budget T per run, "
             "all stages together)", ""]
    lines += [f"- {names.get(p, p)}: {text}" for p, text in paradigms.items()]
    return lines + [""]


def write_markdown(results: dict, path: Path) -> None:
    text = markdown_tables(results)
    write_text_atomic(path, text)


def best_mf_with_low_forces(results: dict) -> str | None:
    """The MF-<low>/EF-<high>/E experiment (any head mode) with the lowest mean
    high-level force RMSE."""
    fids = results["fidelities"]
    prefix = f"MF-{fids['low']}/EF-{fids['high']}/E["
    best, value = None, np.inf
    for name, exp in results["experiments"].items():
        f = exp.get("high", {}).get("forces_rmse")
        if name.startswith(prefix) and f and f["mean"] < value:
            best, value = name, f["mean"]
    return best


def write_figures(results: dict, out: Path, per_run_dirs: dict, dataset, rows) -> list[Path]:
    """Bar charts of high-level RMSEs with 95 % CIs and a parity plot of high-level
    forces (SF-<high>/E against the best MF-<low>/EF-<high>/E), seed 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fids = results["fidelities"]
    names = [n for n, e in results["experiments"].items() if "high" in e]
    for key, label, fname in (("forces_rmse", "force RMSE (meV/Å)", "forces_rmse.png"),
                              ("energy_rmse", "energy RMSE (meV)", "energy_rmse.png")):
        present = [n for n in names if key in results["experiments"][n]["high"]]
        if not present:
            continue
        means = [results["experiments"][n]["high"][key]["mean"] for n in present]
        cis = [results["experiments"][n]["high"][key]["ci95"] for n in present]
        fig, ax = plt.subplots(figsize=(7, 0.45 * len(present) + 1.5))
        ax.barh(range(len(present)), means, xerr=cis, color="tab:blue", capsize=3)
        ax.set_yticks(range(len(present)), present, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(f"{fids['high']} {label}, test split")
        if key == "forces_rmse" and "forces_gap_rmse" in results.get("baseline", {}):
            ax.axvline(results["baseline"]["forces_gap_rmse"], color="tab:red", ls="--",
                       label=f"{fids['low']} forces as {fids['high']}")
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / fname, dpi=110)
        plt.close(fig)
        written.append(out / fname)
    best = best_mf_with_low_forces(results)
    sf = f"SF-{fids['high']}/E"
    if best and sf in per_run_dirs:
        t_high = dataset.fidelities.index(fids["high"])
        ref = np.concatenate([dataset[int(i)].forces[:, t_high].double().numpy() for i in rows])
        if np.isfinite(ref).any():
            fig, axes = plt.subplots(1, 2, figsize=(9, 4.2), sharex=True, sharey=True)
            for ax, name in zip(axes, (sf, best)):
                data = np.load(per_run_dirs[name] / "seed0" / "predictions.npz")
                fl = [str(f) for f in data["fidelities"]]
                pred = data["forces"][:, fl.index(fids["high"])]
                ok = np.isfinite(ref).all(1)
                ax.scatter(ref[ok].ravel(), pred[ok].ravel(), s=1, alpha=0.3)
                lim = float(np.abs(ref[ok]).max())
                ax.plot([-lim, lim], [-lim, lim], "k-", lw=0.5)
                rmse = 1000 * np.sqrt(np.mean((pred[ok] - ref[ok]) ** 2))
                ax.set_title(f"{name}\nRMSE {rmse:.1f} meV/Å", fontsize=9)
                ax.set_xlabel(f"{fids['high']} force (eV/Å)")
            axes[0].set_ylabel("predicted force (eV/Å)")
            fig.tight_layout()
            fig.savefig(out / "forces_parity.png", dpi=110)
            plt.close(fig)
            written.append(out / "forces_parity.png")
    return written

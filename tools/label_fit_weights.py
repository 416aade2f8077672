"""How much do per-point weights in the PMF fit matter? A cheap, deterministic proxy.

Reads the final training labels of finished `cgflow al` runs (RUN/checkpoint/state.json: points,
labels and the effective sample size behind each label), fits them by weighted least squares on a
periodic Fourier basis (the same basis and ridge for every weighting), and prints the KLD of each
fit to the reference PMF. The MLP ensemble is not involved: this isolates the effect of the weights.

    .venv/bin/python tools/label_fit_weights.py runs/al-fast [more run folders]

The choice of `labels.fit_weights = "ess"` in the fast preset came from this script (see
`FitWeights::Ess` in src/al/aldp.rs for the figures it printed).
"""
import json
import sys

import numpy as np

REFERENCE = "data/reference/aldp_umbrella/reference_probabilities.npy"
CAP_KT = 30.0  # labels are capped this far above the lowest, as the fast preset does
GRID = 100


def fourier_basis(phi, psi, order):
    """Real Fourier modes cos/sin(a phi + b psi) with |a|, b <= order (one of each +-pair)."""
    cols = []
    for a in range(-order, order + 1):
        for b in range(0, order + 1):
            if b == 0 and a < 0:
                continue
            arg = a * phi + b * psi
            cols.append(np.cos(arg))
            if a != 0 or b != 0:
                cols.append(np.sin(arg))
    return np.stack(cols, -1)


def kld(reference_p, free_energy_kt):
    q = np.exp(-(free_energy_kt - free_energy_kt.min()))
    q /= q.sum()
    occupied = reference_p > 0
    return float(np.sum(reference_p[occupied] * np.log(reference_p[occupied] / q[occupied])))


def main(runs):
    p = np.load(REFERENCE)
    p = p / p.sum()
    centres = (np.arange(GRID) + 0.5) / GRID * 2 * np.pi - np.pi
    phi_grid, psi_grid = np.meshgrid(centres, centres, indexing="ij")
    for run in runs:
        points = json.load(open(run + "/checkpoint/state.json"))["points"]
        # A checkpoint taken after the search holds new points without labels yet.
        x = np.array(points["train"])[: len(points["train_labels"])]
        labels = np.array([np.nan if v is None else v for v in points["train_labels"]])
        ess = np.array(points["train_label_ess"])
        keep = np.isfinite(labels)
        x, labels, ess = x[keep], labels[keep], ess[keep]
        labels = np.minimum(labels, labels.min() + CAP_KT)
        print(f"{run}: {len(labels)} labelled training points, label ESS median {np.median(ess):.1f}")
        weightings = {
            "uniform": np.ones_like(ess),
            "ess": ess,
            "min(ess,16)": np.minimum(ess, 16),
            "sqrt(ess)": np.sqrt(ess),
            "1/(1/ess+0.01)": 1 / (1 / ess + 0.01),
        }
        for order in (6, 8, 10):
            design = fourier_basis(x[:, 0], x[:, 1], order)
            on_grid = fourier_basis(phi_grid.ravel(), psi_grid.ravel(), order)
            row = []
            for name, w in weightings.items():
                normal = (design * w[:, None]).T @ design + 1e-3 * np.eye(design.shape[1])
                coef = np.linalg.solve(normal, (design * w[:, None]).T @ labels)
                row.append(f"{name} {kld(p, (on_grid @ coef).reshape(GRID, GRID)):.4f}")
            print(f"  order {order:2d}: " + " | ".join(row))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])

"""Checks structures that `cgflow backmap` made for Ace-(Ala)2-Nme, independently of cgflow's code:
CG angles measured with numpy against the requested ones, the handedness of both CA (signed volume of
N, C, CB, HA against the reference structure's), and the energies of the table against a bound.

    python3 tools/ace_ala2_nme_backmap_check.py STRUCTURES.npy POINTS_DEG.txt BOUND_KT SUMMARY.json

STRUCTURES.npy and its table STRUCTURES.csv as `cgflow backmap --out STRUCTURES.npy --degrees` wrote
them; POINTS_DEG.txt the --cg file (degrees); BOUND_KT the energy bound (u, kT).
"""
import csv
import json
import sys

import numpy as np

BACKBONE = [(4, 6, 8, 14), (6, 8, 14, 16), (14, 16, 18, 24), (16, 18, 24, 26)]
# Each CA with N, C, CB, HA (data/ace_ala2_nme/README.md).
CENTRES = {8: (6, 14, 10, 9), 18: (16, 24, 20, 19)}


def dihedral(x, a, b, c, d):
    b0, b1, b2 = x[..., a, :] - x[..., b, :], x[..., c, :] - x[..., b, :], x[..., d, :] - x[..., c, :]
    b1n = b1 / np.linalg.norm(b1, axis=-1, keepdims=True)
    v = b0 - np.sum(b0 * b1n, axis=-1, keepdims=True) * b1n
    w = b2 - np.sum(b2 * b1n, axis=-1, keepdims=True) * b1n
    return np.arctan2(np.sum(np.cross(b1n, v) * w, axis=-1), np.sum(v * w, axis=-1))


def signed_volume(x, s):
    a, b, c, d = (x[..., i, :] for i in s)
    return np.sum(np.cross(b - a, c - a) * (d - a), axis=-1)


def reference_structure():
    rows = [line for line in open("data/ace_ala2_nme/min_energy.pdb") if line.startswith(("ATOM", "HETATM"))]
    return np.array([[float(r[30:38]), float(r[38:46]), float(r[46:54])] for r in rows]) / 10.0


def main(structures, points, bound, out):
    x = np.load(structures)
    requested = np.radians(np.loadtxt(points, ndmin=2))
    n = x.shape[0] // requested.shape[0]
    angles = np.stack([dihedral(x, *d) for d in BACKBONE], axis=-1)
    target = np.repeat(requested, n, axis=0)
    error = np.abs(np.angle(np.exp(1j * (angles - target))))
    reference = reference_structure()
    wrong = {
        str(ca): int(np.sum(np.sign(signed_volume(x, s)) != np.sign(signed_volume(reference, s))))
        for ca, s in CENTRES.items()
    }
    table = list(csv.DictReader(open(structures.rsplit(".", 1)[0] + ".csv")))
    u = np.array([float(r["u_kt"]) for r in table])
    weights = np.array([float(r["weight"]) for r in table]).reshape(-1, n)
    summary = {
        "structures": int(x.shape[0]),
        "per_point": n,
        "max_cg_angle_error_rad": float(error.max()),
        "wrong_handed_per_ca": wrong,
        "u_kt": {"min": float(u.min()), "max": float(u.max()), "bound": bound},
        "ess_per_point": [float(1.0 / np.sum(w**2)) for w in weights],
    }
    json.dump(summary, open(out, "w"), indent=2)
    print(json.dumps(summary, indent=2))
    ok = error.max() < 1e-8 and not any(wrong.values()) and u.max() < bound
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4])

"""Shared fixtures: the repository's ALDP files, a structure sampler, and a small model trained once
per session by the "tiny" active-learning preset (a few seconds)."""

from pathlib import Path

import numpy as np
import openmm
import openmm.app
import pytest

import cgflow

ROOT = Path(__file__).resolve().parents[2]
ALDP = ROOT / "data" / "alanine_dipeptide"
ACE_ALA2_NME = ROOT / "data" / "ace_ala2_nme"


def pdb_positions_nm(path: Path) -> np.ndarray:
    pdb = openmm.app.PDBFile(str(path))
    return np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(openmm.unit.nanometer), dtype=np.float64)


def perturbed(x: np.ndarray, n: int, scale_nm: float, seed: int) -> np.ndarray:
    """n copies of x with seeded Gaussian displacements of scale_nm per coordinate."""
    rng = np.random.default_rng(seed)
    return x[np.newaxis] + scale_nm * rng.standard_normal((n,) + x.shape)


@pytest.fixture(scope="session")
def aldp_min_nm() -> np.ndarray:
    return pdb_positions_nm(ALDP / "min_energy.pdb")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("al") / "run"
    cgflow.al(
        "tiny",
        out,
        system=ALDP / "aldp_obc1.xml",
        structure=ALDP / "min_energy.pdb",
        reference="none",
    )
    return out / "model"

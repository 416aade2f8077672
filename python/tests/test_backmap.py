"""cgflow.load_model(...).backmap against independent computations: chirality from the structure,
CG angles measured in numpy, energies from OpenMM's Python layer, per-point normalised weights."""

import numpy as np
import openmm
import pytest

import cgflow
from conftest import ALDP, ROOT, pdb_positions_nm

PHI = (4, 6, 8, 14)
PSI = (6, 8, 14, 16)
# Alanine's CA substituents: N, C, CB, HA.
N, C, CB, HA = 6, 14, 10, 9


def dihedral(x: np.ndarray, atoms) -> np.ndarray:
    """Dihedral angles (rad) of atoms i-j-k-l over structures x [m, atoms, 3] (IUPAC sign)."""
    p0, p1, p2, p3 = (x[:, a] for a in atoms)
    b0, b1, b2 = p0 - p1, p2 - p1, p3 - p2
    b1n = b1 / np.linalg.norm(b1, axis=1, keepdims=True)
    v = b0 - np.sum(b0 * b1n, axis=1, keepdims=True) * b1n
    w = b2 - np.sum(b2 * b1n, axis=1, keepdims=True) * b1n
    return np.arctan2(np.sum(np.cross(b1n, v) * w, axis=1), np.sum(v * w, axis=1))


def chirality_sign(x: np.ndarray) -> np.ndarray:
    """Sign of the signed volume of CA's four substituents, ((C - N) x (CB - N)) . (HA - N): one sign
    for L, the other for D. (Taken without CA, it stays defined for the distorted structures a
    barely trained flow draws, in which CA can lie outside its substituents' tetrahedron.)"""
    return np.sign(np.einsum("ij,ij->i", np.cross(x[:, C] - x[:, N], x[:, CB] - x[:, N]), x[:, HA] - x[:, N]))


def wrapped(a: np.ndarray) -> np.ndarray:
    return (a + np.pi) % (2 * np.pi) - np.pi


@pytest.fixture(scope="module")
def model(tiny_model):
    return cgflow.load_model(tiny_model)


def test_backmapped_structures_are_l_with_the_requested_angles_and_openmm_energies(model):
    cg = np.array([[-1.4, 1.2], [-2.6, 2.8], [1.0, -0.8]])
    # The tiny preset's flow is barely trained: many draws are D-alanine, so allow more rounds.
    result = model.backmap(cg, n=20, seed=5, max_rounds=200, platform="Reference")
    m = 3 * 20
    assert result.positions_nm.shape == (m, 22, 3)
    np.testing.assert_array_equal(result.cg_index, np.repeat([0, 1, 2], 20))
    # L-alanine: the chirality of the minimum-energy structure (which is L), in every structure.
    reference = chirality_sign(pdb_positions_nm(ALDP / "min_energy.pdb")[np.newaxis])[0]
    assert reference != 0
    assert np.all(chirality_sign(result.positions_nm) == reference)
    # CG angles measured here, from the positions, equal the requested ones.
    requested = cg[result.cg_index]
    achieved = np.stack([dihedral(result.positions_nm, PHI), dihedral(result.positions_nm, PSI)], axis=1)
    assert np.max(np.abs(wrapped(achieved - requested))) < 1e-8
    assert np.max(np.abs(wrapped(result.cg_achieved_rad - requested))) < 1e-8
    # Energies equal OpenMM's Python layer's for the same positions.
    system = openmm.XmlSerializer.deserialize((ALDP / "aldp_obc1.xml").read_text())
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    expected = []
    for x in result.positions_nm:
        context.setPositions(x)
        expected.append(context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole))
    np.testing.assert_allclose(result.energies_kj_per_mol, expected, rtol=1e-6, atol=1e-6)
    kt = cgflow.Energy(ALDP / "aldp_obc1.xml", platform="Reference").kt_kj_per_mol
    np.testing.assert_allclose(result.reduced_energies, result.energies_kj_per_mol / kt, rtol=1e-12)
    # Weights: normalised per point, and proportional to exp(log_weight) within a point.
    for j in range(3):
        rows = result.cg_index == j
        w = result.weights[rows]
        assert w.sum() == pytest.approx(1.0, abs=1e-12)
        lw = result.log_weights[rows]
        np.testing.assert_allclose(w, np.exp(lw - lw.max()) / np.exp(lw - lw.max()).sum(), rtol=1e-9)
        ess = 1.0 / np.sum(w**2)
        assert result.point_ess[j] == pytest.approx(ess, rel=1e-9)
    assert result.evaluations >= m


def test_backmapping_is_reproducible_from_its_seed_and_takes_degrees(model):
    a = model.backmap([-80.0, 70.0], n=4, seed=9, degrees=True, platform="Reference")
    b = model.backmap(np.radians([-80.0, 70.0]), n=4, seed=9, platform="Reference")
    np.testing.assert_allclose(a.positions_nm, b.positions_nm, atol=1e-12)
    c = model.backmap(np.radians([-80.0, 70.0]), n=4, seed=10, platform="Reference")
    assert np.max(np.abs(c.positions_nm - b.positions_nm)) > 1e-3


def test_an_energy_bound_keeps_only_structures_below_it(model):
    free = model.backmap([[-2.6, 2.8]], n=40, seed=2, max_rounds=200, platform="Reference")
    bound = float(np.median(free.reduced_energies))
    result = model.backmap([[-2.6, 2.8]], n=10, seed=2, max_energy_kt=bound, max_rounds=200, platform="Reference")
    assert np.all(result.reduced_energies <= bound)
    assert result.rejected_energy > 0


def test_to_mdtraj_gives_the_same_structures_and_angles(model):
    mdtraj = pytest.importorskip("mdtraj")
    result = model.backmap([[-1.4, 1.2], [1.0, -0.8]], n=3, seed=4, max_rounds=200)
    trajectory = result.to_mdtraj(ALDP / "aldp.pdb")
    assert isinstance(trajectory, mdtraj.Trajectory)
    assert trajectory.n_frames == 6 and trajectory.n_atoms == 22
    np.testing.assert_allclose(trajectory.xyz, result.positions_nm, atol=1e-6)
    phi = mdtraj.compute_dihedrals(trajectory, [PHI])[:, 0]
    assert np.max(np.abs(wrapped(phi - np.array([-1.4] * 3 + [1.0] * 3)))) < 1e-5  # float32 positions
    with pytest.raises(ValueError, match="atoms"):
        result.to_mdtraj(ALDP.parent / "ace_ala2_nme" / "min_energy.pdb")


def test_bad_backmap_input_raises_the_named_exceptions(model, tmp_path):
    with pytest.raises(FileNotFoundError):
        cgflow.load_model(tmp_path / "no_model")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "flow.json").write_text("{ not json")
    with pytest.raises(ValueError, match="no molecule.json"):
        cgflow.load_model(tmp_path / "broken")
    # A copy of a good model with a damaged flow.json.
    import shutil

    shutil.copytree(model.directory, tmp_path / "damaged")
    (tmp_path / "damaged" / "flow.json").write_text("{ not json")
    with pytest.raises(ValueError, match="flow.json"):
        cgflow.load_model(tmp_path / "damaged")
    with pytest.raises(ValueError, match=r"expected shape \[points, 2\]"):
        model.backmap(np.zeros((3, 3)), n=2)
    with pytest.raises(ValueError, match="CG point 1"):
        model.backmap([[0.0, 0.0], [np.nan, 0.0]], n=2)
    with pytest.raises(ValueError, match="CG point 0"):
        model.backmap([[4.0, 0.0]], n=2)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        model.backmap([[0.0, 0.0]], n=0)
    with pytest.raises(ValueError, match="max_energy_kt is NaN"):
        model.backmap([[0.0, 0.0]], n=1, max_energy_kt=float("nan"))
    with pytest.raises(FileNotFoundError):
        model.backmap([[0.0, 0.0]], n=1, system=tmp_path / "missing.xml")
    with pytest.raises(ValueError, match="fingerprint|System"):
        model.backmap([[0.0, 0.0]], n=1, system=ALDP / "aldp_vacuum.xml")


def test_any_molecule_learns_and_backmaps_from_its_data(tmp_path):
    """The second peptide (32 atoms, four CG angles) through `cgflow.al(..., cg="backbone")`: its
    model backmaps to the requested angles with both alanines L (each CA's signed volume of N, C,
    CB, HA has the reference structure's sign)."""
    peptide = ROOT / "data" / "ace_ala2_nme"
    out = tmp_path / "al"
    cgflow.al("tiny", out, system=peptide / "system_obc1.xml", structure=peptide / "min_energy.pdb", cg="backbone")
    model = cgflow.load_model(out / "model")
    assert (model.n_atoms, model.cg_dims) == (32, 4)
    requested = np.array([[-80.0, 150.0, -70.0, -40.0], [-150.0, 160.0, 60.0, 40.0]])
    result = model.backmap(requested, n=3, degrees=True, max_energy_kt=1e6)
    error = np.angle(np.exp(1j * (result.cg_achieved_rad - np.radians(requested)[result.cg_index])))
    assert np.abs(error).max() < 1e-8
    x = result.positions_nm

    def volume(x, a, b, c, d):
        edges = np.cross(x[..., b, :] - x[..., a, :], x[..., c, :] - x[..., a, :])
        return np.einsum("...i,...i", edges, x[..., d, :] - x[..., a, :])

    reference = pdb_positions_nm(peptide / "min_energy.pdb")
    for substituents in [(6, 14, 10, 9), (16, 24, 20, 19)]:
        assert np.all(np.sign(volume(x, *substituents)) == np.sign(volume(reference, *substituents)))

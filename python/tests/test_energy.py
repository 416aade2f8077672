"""cgflow.Energy against OpenMM's own Python layer, its input forms, and its errors."""

import numpy as np
import openmm
import openmm.app
import pytest

import cgflow
from conftest import ACE_ALA2_NME, ALDP, pdb_positions_nm, perturbed

KJ = openmm.unit.kilojoule_per_mole
NM = openmm.unit.nanometer


def openmm_energies_forces(system: openmm.System, positions_nm: np.ndarray):
    """Energies and forces from OpenMM's Python layer, one Context on the Reference platform."""
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    energies, forces = [], []
    for x in positions_nm:
        context.setPositions(x)
        state = context.getState(getEnergy=True, getForces=True)
        energies.append(state.getPotentialEnergy().value_in_unit(KJ))
        forces.append(state.getForces(asNumpy=True).value_in_unit(KJ / NM))
    return np.array(energies), np.array(forces)


def assert_relative(actual, expected, rtol):
    actual, expected = np.asarray(actual), np.asarray(expected)
    scale = np.maximum(np.abs(expected), 1.0)
    worst = np.max(np.abs(actual - expected) / scale)
    assert worst <= rtol, f"largest relative difference {worst:.3e} > {rtol:.1e}"


@pytest.mark.parametrize(
    "system_file, structure",
    [
        (ALDP / "aldp_obc1.xml", ALDP / "min_energy.pdb"),
        (ALDP / "aldp_vacuum.xml", ALDP / "min_energy.pdb"),
        (ACE_ALA2_NME / "system_obc1.xml", ACE_ALA2_NME / "min_energy.pdb"),
    ],
    ids=["aldp_obc1", "aldp_vacuum", "ace_ala2_nme_obc1"],
)
def test_energies_and_forces_equal_openmm_python_on_reference(system_file, structure):
    x = perturbed(pdb_positions_nm(structure), 16, 0.01, seed=7)
    system = openmm.XmlSerializer.deserialize(system_file.read_text())
    expected_e, expected_f = openmm_energies_forces(system, x)
    energy = cgflow.Energy(system_file, platform="Reference")
    e, f = energy.evaluate(x)
    assert e.shape == (16,) and f.shape == x.shape
    assert_relative(e, expected_e, 1e-6)
    assert_relative(f, expected_f, 1e-6)
    # The perturbations move the energy by far more than the tolerance: the comparison can fail.
    assert np.ptp(expected_e) > 10.0
    assert energy.evaluations == 16


def test_system_built_in_python_and_its_xml_path_give_identical_results(tmp_path, aldp_min_nm):
    prmtop = openmm.app.AmberPrmtopFile(str(ALDP / "alanine-dipeptide.prmtop"))
    system = prmtop.createSystem(nonbondedMethod=openmm.app.NoCutoff, implicitSolvent=openmm.app.OBC1)
    path = tmp_path / "system.xml"
    path.write_text(openmm.XmlSerializer.serialize(system))
    x = perturbed(aldp_min_nm, 8, 0.01, seed=3)
    from_object = cgflow.Energy(system, platform="Reference").evaluate(x)
    from_path = cgflow.Energy(path, platform="Reference").evaluate(x)
    from_string = cgflow.Energy(path.read_text(), platform="Reference").evaluate(x)
    from_str_path = cgflow.Energy(str(path), platform="Reference").evaluate(x)
    for other in (from_path, from_string, from_str_path):
        np.testing.assert_array_equal(from_object[0], other[0])
        np.testing.assert_array_equal(from_object[1], other[1])
    assert_relative(from_object[0], openmm_energies_forces(system, x)[0], 1e-6)


def test_one_configuration_reduced_units_quantities_and_the_counter(aldp_min_nm):
    energy = cgflow.Energy(ALDP / "aldp_obc1.xml", platform="Reference", temperature_k=350.0)
    e, f = energy.evaluate(aldp_min_nm)
    assert isinstance(e, float) and f.shape == (22, 3)
    kt = openmm.unit.MOLAR_GAS_CONSTANT_R.value_in_unit(KJ / openmm.unit.kelvin) * 350.0
    # cgflow's R is CODATA 2018's 8.314462618e-3 kJ/mol/K; openmm.unit's differs in the 11th digit.
    assert energy.kt_kj_per_mol == pytest.approx(kt, rel=1e-10)
    u, du = energy.reduced(aldp_min_nm)
    kt = energy.kt_kj_per_mol
    assert u == pytest.approx(e / kt, rel=1e-12)
    np.testing.assert_allclose(du, -f / kt, rtol=1e-12)
    with_units = energy.evaluate(openmm.unit.Quantity(aldp_min_nm * 10.0, openmm.unit.angstrom))
    assert with_units[0] == pytest.approx(e, rel=1e-12)
    assert energy.evaluations == 3


def test_cpu_platform_agrees_with_reference(aldp_min_nm):
    x = perturbed(aldp_min_nm, 32, 0.01, seed=11)
    reference = cgflow.Energy(ALDP / "aldp_obc1.xml", platform="Reference").evaluate(x)
    cpu = cgflow.Energy(ALDP / "aldp_obc1.xml", platform="CPU", workers=2)
    e, f = cpu.evaluate(x)
    assert cpu.platform == "CPU"
    np.testing.assert_allclose(e, reference[0], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(f, reference[1], rtol=1e-3, atol=1e-2)


def test_bad_input_raises_the_named_exceptions(tmp_path, aldp_min_nm):
    energy = cgflow.Energy(ALDP / "aldp_obc1.xml", platform="Reference")
    with pytest.raises(ValueError, match=r"expected shape \[n, 22, 3\]"):
        energy.evaluate(np.zeros((4, 21, 3)))
    with pytest.raises(ValueError, match=r"expected shape"):
        energy.evaluate(np.zeros((22, 2)))
    with pytest.raises(ValueError, match="no configurations"):
        energy.evaluate(np.zeros((0, 22, 3)))
    for bad in (np.nan, np.inf, -np.inf):
        x = np.stack([aldp_min_nm, aldp_min_nm])
        x[1, 5, 2] = bad
        with pytest.raises(ValueError, match="configuration 1, atom 5 is not finite"):
            energy.evaluate(x)
    with pytest.raises(ValueError, match="not an array of numbers"):
        energy.evaluate([["a", "b", "c"]] * 22)
    assert energy.evaluations == 0
    with pytest.raises(FileNotFoundError):
        cgflow.Energy(tmp_path / "missing.xml")
    with pytest.raises(ValueError, match="not a valid OpenMM System"):
        cgflow.Energy("<System this is not a system")
    with pytest.raises(ValueError, match="unknown OpenMM platform 'NoSuchPlatform'; available: .*CPU"):
        cgflow.Energy(ALDP / "aldp_obc1.xml", platform="NoSuchPlatform")
    # An engine failure: OpenMM refuses the property when the Context is made; its message comes along.
    with pytest.raises(RuntimeError, match="OpenMM.*Illegal property name: Bogus"):
        cgflow.Energy(ALDP / "aldp_obc1.xml", platform="CPU", properties={"Bogus": "1"})
    with pytest.raises(ValueError, match="temperature"):
        cgflow.Energy(ALDP / "aldp_obc1.xml", temperature_k=-1.0)
    with pytest.raises(ValueError, match="workers"):
        cgflow.Energy(ALDP / "aldp_obc1.xml", workers=0)
    with pytest.raises(TypeError, match="openmm.System"):
        cgflow.Energy(42)


def test_openmm_and_cgflow_share_one_libopenmm_in_one_process():
    import openmm as o

    names = sorted(o.Platform.getPlatform(i).getName() for i in range(o.Platform.getNumPlatforms()))
    # One registration of each platform: cgflow adopted the plugins openmm loaded, and listing
    # them from cgflow registers nothing again.
    assert sorted(cgflow.platforms()) == names
    assert len(names) == len(set(names)), names
    assert o.Platform.getNumPlatforms() == len(names)
    assert "CPU" in names
    assert cgflow.openmm_version() == o.Platform.getOpenMMVersion()
    with open("/proc/self/maps") as maps:
        libraries = {line.split()[-1] for line in maps if line.rstrip().endswith("/libOpenMM.so")}
    assert len(libraries) == 1, libraries
    # Both run in the same process, one after the other and interleaved.
    system = o.XmlSerializer.deserialize((ALDP / "aldp_obc1.xml").read_text())
    x = pdb_positions_nm(ALDP / "min_energy.pdb")
    e_cgflow, _ = cgflow.Energy(system, platform="Reference").evaluate(x)
    e_openmm, _ = openmm_energies_forces(system, x[np.newaxis])
    assert e_cgflow == pytest.approx(e_openmm[0], rel=1e-9)

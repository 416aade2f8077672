#!/usr/bin/env python3
"""Reference energies and forces from OpenMM's Python layer, for cgflow's tests.

For each shipped System (data/alanine_dipeptide/aldp_obc1.xml, aldp_vacuum.xml) and each structure
(the minimum-energy structure position_min_energy_nm.xyz, and the idealised alanine-dipeptide.crd)
evaluates the potential energy (kJ/mol) and forces (kJ/mol/nm) on the Reference platform (double
precision) and writes tests/data/aldp_reference.json.

Run:  .venv/bin/python tools/make_reference_fixture.py
"""
import json
import os

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "data", "alanine_dipeptide")


def structures():
    xyz = np.loadtxt(os.path.join(DATA, "position_min_energy_nm.xyz"), skiprows=2, usecols=(1, 2, 3))
    crd = app.AmberInpcrdFile(os.path.join(DATA, "alanine-dipeptide.crd"))
    crd_nm = np.array(crd.getPositions().value_in_unit(unit.nanometer))
    return {"min_energy": xyz, "crd": crd_nm}


def main():
    out = {"openmm_version": openmm.__version__, "platform": "Reference", "results": []}
    for system_name in ["aldp_obc1", "aldp_vacuum"]:
        with open(os.path.join(DATA, system_name + ".xml")) as f:
            system = openmm.XmlSerializer.deserialize(f.read())
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
        for structure_name, positions in structures().items():
            context.setPositions(positions)
            state = context.getState(getEnergy=True, getForces=True)
            out["results"].append({
                "system": system_name,
                "structure": structure_name,
                "positions_nm": positions.reshape(-1).tolist(),
                "energy_kj_per_mol": state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
                "forces_kj_per_mol_nm": np.asarray(
                    state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
                ).reshape(-1).tolist(),
            })
    path = os.path.join(ROOT, "tests", "data", "aldp_reference.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    for r in out["results"]:
        print(f'{r["system"]:12s} {r["structure"]:10s} {r["energy_kj_per_mol"]:.10f} kJ/mol')
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

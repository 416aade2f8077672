#!/usr/bin/env python3
"""Builds the alanine dipeptide (ALDP) data that cgflow ships, from the files in ../shared/data.

Writes into data/alanine_dipeptide/:
  aldp_obc1.xml     OpenMM System: AMBER ff96 (prmtop), OBC1 implicit solvent, NoCutoff, no constraints
  aldp_vacuum.xml   the same without implicit solvent
  aldp.pdb          topology with the idealised .crd/.pdb geometry (copied)
  min_energy.pdb    topology with the minimum-energy structure of position_min_energy_nm.xyz
and copies the source files with their attribution (SOURCES.md).

Run with the project's Python environment:  .venv/bin/python tools/make_aldp_system.py
"""
import os
import shutil
import sys

import numpy as np
import openmm
import openmm.app as app

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SOURCE = os.environ.get("CGFLOW_SHARED_DATA", os.path.join(ROOT, "..", "shared", "data", "alanine_dipeptide"))
OUT = os.path.join(ROOT, "data", "alanine_dipeptide")


def create_system(prmtop, implicit):
    return prmtop.createSystem(
        nonbondedMethod=app.NoCutoff,
        implicitSolvent=app.OBC1 if implicit else None,
        constraints=None,
        rigidWater=False,
    )


def main():
    if openmm.__version__ != "8.6.1":
        print(f"warning: OpenMM {openmm.__version__}, the shipped files were made with 8.6.1", file=sys.stderr)
    os.makedirs(OUT, exist_ok=True)
    for name in ["alanine-dipeptide.prmtop", "alanine-dipeptide.crd", "alanine-dipeptide.pdb",
                 "position_min_energy_nm.xyz", "setup.leap.in", "README"]:
        target = os.path.join(OUT, name)
        if os.path.exists(target):
            os.chmod(target, 0o644)
        shutil.copy(os.path.join(SOURCE, name), target)
        os.chmod(target, 0o644)
    prmtop = app.AmberPrmtopFile(os.path.join(SOURCE, "alanine-dipeptide.prmtop"))
    for implicit, name in [(True, "aldp_obc1.xml"), (False, "aldp_vacuum.xml")]:
        system = create_system(prmtop, implicit)
        with open(os.path.join(OUT, name), "w") as f:
            f.write(openmm.XmlSerializer.serialize(system))
    pdb = app.PDBFile(os.path.join(SOURCE, "alanine-dipeptide.pdb"))
    with open(os.path.join(OUT, "aldp.pdb"), "w") as f:
        app.PDBFile.writeFile(prmtop.topology, pdb.positions, f)
    x = np.loadtxt(os.path.join(SOURCE, "position_min_energy_nm.xyz"), skiprows=2, usecols=(1, 2, 3))
    with open(os.path.join(OUT, "min_energy.pdb"), "w") as f:
        app.PDBFile.writeFile(prmtop.topology, openmm.unit.Quantity(x * 10.0, openmm.unit.angstrom), f)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Builds the second peptide cgflow ships, Ace-(Ala)2-Nme (32 atoms), with PyPI packages only.

Force field: AMBER ff96 (OpenMM's amber96.xml) with OBC1 implicit solvent, as a CustomGBForce
(openmm.app.internal.customgbforces.GBSAOBC1Force) with tleap's mbondi2 radii and default
screening factors and a solvent dielectric of 78.5, as ALDP's prmtop has them; NoCutoff, no
constraints. The recipe is checked on alanine dipeptide
first: built this way from ALDP's PDB, its energies must equal those of the shipped
data/alanine_dipeptide/aldp_obc1.xml (made by tleap's prmtop) at the same configurations.

Structure: the tleap-built, fully extended ALDP of data/alanine_dipeptide/alanine-dipeptide.pdb
with one more alanine. The rigid motion that takes the alanine's (N, H, CA) onto the NME cap's
(N, H, CH3), atoms that sit where the next residue's would, places a copy of the alanine there and
moves the cap one residue on; then the structure is minimised. Both alanines stay L (a proper
rotation keeps handedness; checked below).

Writes into data/ace_ala2_nme/:
  system_obc1.xml   OpenMM System
  extended.pdb      the built structure before minimisation
  min_energy.pdb    the minimised structure (the reference structure)

Run with the project's Python environment:  .venv/bin/python tools/make_ace_ala2_nme.py
"""
import os
import sys

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
from openmm.app.internal.customgbforces import GBSAOBC1Force

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ALDP = os.path.join(ROOT, "data", "alanine_dipeptide")
OUT = os.path.join(ROOT, "data", "ace_ala2_nme")


# tleap's mbondi2 radii (nm; hydrogen bonded to nitrogen 0.13) and its default GB screening
# factors, what `set default PBRadii mbondi2` gave ALDP's prmtop.
MBONDI2_RADIUS_NM = {"H": 0.12, "C": 0.17, "N": 0.155, "O": 0.15, "S": 0.18}
SCREEN = {"H": 0.85, "C": 0.72, "N": 0.79, "O": 0.85, "S": 0.96}


def create_system(topology):
    """amber96 + OBC1 (CustomGBForce, mbondi2 radii), NoCutoff, no constraints."""
    forcefield = app.ForceField("amber96.xml")
    system = forcefield.createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False)
    (nonbonded,) = [f for f in system.getForces() if isinstance(f, openmm.NonbondedForce)]
    bonded_to_n = set()
    for a, b in topology.bonds():
        for h, other in ((a, b), (b, a)):
            if h.element.symbol == "H" and other.element.symbol == "N":
                bonded_to_n.add(h.index)
    gb = GBSAOBC1Force(solventDielectric=78.5, soluteDielectric=1.0, SA="ACE", cutoff=None, kappa=0.0)
    for atom in topology.atoms():
        charge = nonbonded.getParticleParameters(atom.index)[0].value_in_unit(unit.elementary_charge)
        symbol = atom.element.symbol
        radius = 0.13 if atom.index in bonded_to_n else MBONDI2_RADIUS_NM[symbol]
        gb.addParticle([charge, radius, SCREEN[symbol]])
    gb.finalize()
    system.addForce(gb)
    return system


def energies(system, configurations_nm):
    context = openmm.Context(system, openmm.VerletIntegrator(1e-3), openmm.Platform.getPlatformByName("Reference"))
    out = []
    for x in configurations_nm:
        context.setPositions(x)
        out.append(context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    return np.array(out)


def check_recipe_on_aldp():
    """The recipe's ALDP against the shipped ALDP System, at the PDB's and at perturbed positions."""
    pdb = app.PDBFile(os.path.join(ALDP, "alanine-dipeptide.pdb"))
    ours = create_system(pdb.topology)
    with open(os.path.join(ALDP, "aldp_obc1.xml")) as f:
        shipped = openmm.XmlSerializer.deserialize(f.read())
    x0 = np.array(pdb.positions.value_in_unit(unit.nanometer))
    rng = np.random.default_rng(1)
    xs = [x0] + [x0 + rng.normal(scale=0.01, size=x0.shape) for _ in range(4)]
    a, b = energies(ours, xs), energies(shipped, xs)
    # amber96.xml and the prmtop round some force constants differently (angles and torsions
    # differ by up to 3e-4 kJ/mol here); anything larger is a different force field.
    worst = np.max(np.abs(a - b))
    print(f"ALDP by this recipe vs aldp_obc1.xml: {a.round(6)} vs {b.round(6)} kJ/mol, largest difference {worst:.1e}")
    if worst > 1e-3:
        sys.exit("the recipe does not reproduce ALDP's force field")


def kabsch(p, q):
    """Rotation r and translation t with r @ p_i + t ~ q_i (proper rotation)."""
    pc, qc = p.mean(0), q.mean(0)
    u, _, vt = np.linalg.svd((p - pc).T @ (q - qc))
    d = np.sign(np.linalg.det(vt.T @ u.T))
    r = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    return r, qc - r @ pc


def build_extended():
    """Ace-Ala-Ala-Nme from the extended ALDP: (topology, positions in nm)."""
    pdb = app.PDBFile(os.path.join(ALDP, "alanine-dipeptide.pdb"))
    atoms = list(pdb.topology.atoms())
    x = np.array(pdb.positions.value_in_unit(unit.nanometer))
    index = {(a.residue.name, a.name): a.index for a in atoms}
    ala = [a.index for a in atoms if a.residue.name == "ALA"]
    nme = [a.index for a in atoms if a.residue.name == "NME"]
    frame_from = x[[index["ALA", "N"], index["ALA", "H"], index["ALA", "CA"]]]
    frame_to = x[[index["NME", "N"], index["NME", "H"], index["NME", "C"]]]
    r, t = kabsch(frame_from, frame_to)
    fit = np.abs(frame_from @ r.T + t - frame_to).max()
    print(f"residue step: fit residual {fit:.1e} nm")
    topology = app.Topology()
    chain = topology.addChain()
    positions = []
    new_atoms = {}

    def add_residue(name, indices, move):
        residue = topology.addResidue(name, chain)
        for i in indices:
            atom = atoms[i]
            new_atoms[(len(positions))] = topology.addAtom(atom.name, atom.element, residue)
            positions.append(move(x[i]))
    add_residue("ACE", [a.index for a in atoms if a.residue.name == "ACE"], lambda p: p)
    add_residue("ALA", ala, lambda p: p)
    add_residue("ALA", ala, lambda p: r @ p + t)
    add_residue("NME", nme, lambda p: r @ p + t)
    positions = np.array(positions)
    # Bonds from the residue templates, with the peptide bonds between residues.
    topology.createStandardBonds()
    return topology, positions


def signed_volume(x, centre, a, b, c):
    return float(np.dot(np.cross(x[a] - x[centre], x[b] - x[centre]), x[c] - x[centre]))


def main():
    if openmm.__version__ != "8.6.1":
        print(f"warning: OpenMM {openmm.__version__}, the shipped files were made with 8.6.1", file=sys.stderr)
    check_recipe_on_aldp()
    topology, x = build_extended()
    system = create_system(topology)
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "extended.pdb"), "w") as f:
        app.PDBFile.writeFile(topology, x * 10.0 * unit.angstrom, f)
    context = openmm.Context(system, openmm.VerletIntegrator(1e-3), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(x)
    before = context.getState(getEnergy=True).getPotentialEnergy()
    openmm.LocalEnergyMinimizer.minimize(context, 1e-3, 0)
    state = context.getState(getEnergy=True, getPositions=True)
    xm = np.array(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    print(f"energy: built {before}, minimised {state.getPotentialEnergy()}")
    # Handedness at each CA, (N, C, CB) as seen from CA, against ALDP's L-alanine.
    aldp = app.PDBFile(os.path.join(ALDP, "alanine-dipeptide.pdb"))
    ai = {a.name: a.index for a in aldp.topology.atoms() if a.residue.name == "ALA"}
    xa = np.array(aldp.positions.value_in_unit(unit.nanometer))
    want = np.sign(signed_volume(xa, ai["CA"], ai["N"], ai["C"], ai["CB"]))
    for residue in [r for r in topology.residues() if r.name == "ALA"]:
        n = {a.name: a.index for a in residue.atoms()}
        got = np.sign(signed_volume(xm, n["CA"], n["N"], n["C"], n["CB"]))
        if got != want:
            sys.exit(f"residue {residue.index + 1}: CA is not L")
    with open(os.path.join(OUT, "system_obc1.xml"), "w") as f:
        f.write(openmm.XmlSerializer.serialize(system))
    with open(os.path.join(OUT, "min_energy.pdb"), "w") as f:
        app.PDBFile.writeFile(topology, xm * 10.0 * unit.angstrom, f)
    print(f"wrote {OUT}: {system.getNumParticles()} atoms, both CA L")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The baseline of `cargo bench --bench md`: the same multi-walker MD driven from OpenMM's Python
layer. Loads the copy System that cgflow built (serialized XML) and its start positions, runs
LangevinMiddleIntegrator steps, and every `record_every` steps reads the positions and computes
(phi, psi) of every walker with numpy, the way a Python MD script records CVs.

Prints one JSON line: {"walker_steps_per_second": ..., "steps": ..., "walkers": ...}.
"""
import argparse
import json
import time

import numpy as np
import openmm


def dihedrals(x, quads):
    p0, p1, p2, p3 = (x[:, q] for q in quads.T)
    b1, b2, b3 = p1 - p0, p2 - p1, p3 - p2
    n1, n2 = np.cross(b1, b2), np.cross(b2, b3)
    return np.arctan2(np.linalg.norm(b2, axis=-1) * np.einsum("...i,...i", b1, n2), np.einsum("...i,...i", n1, n2))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--system", required=True)
    parser.add_argument("--positions", required=True, help=".npy (walkers*atoms, 3) in nm")
    parser.add_argument("--walkers", type=int, required=True)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--record-every", type=int, default=100)
    parser.add_argument("--platform", default="CPU")
    args = parser.parse_args()
    with open(args.system) as f:
        system = openmm.XmlSerializer.deserialize(f.read())
    integrator = openmm.LangevinMiddleIntegrator(300.0, 1.0, 0.001)
    integrator.setRandomNumberSeed(1)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(args.platform))
    context.setPositions(np.load(args.positions))
    context.setVelocitiesToTemperature(300.0, 1)
    n_atoms = system.getNumParticles() // args.walkers
    quads = np.array([[4, 6, 8, 14], [6, 8, 14, 16]])
    integrator.step(args.record_every)  # warm-up
    cvs = []
    start = time.perf_counter()
    for _ in range(args.steps // args.record_every):
        integrator.step(args.record_every)
        x = context.getState(getPositions=True).getPositions(asNumpy=True)._value.reshape(args.walkers, n_atoms, 3)
        cvs.append(dihedrals(x, quads))
    elapsed = time.perf_counter() - start
    print(json.dumps({"walker_steps_per_second": args.steps * args.walkers / elapsed, "steps": args.steps,
                      "walkers": args.walkers}))


if __name__ == "__main__":
    main()

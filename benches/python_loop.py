#!/usr/bin/env python3
"""The baseline of `cargo bench --bench energy`: a plain OpenMM Python loop, one setPositions and one
getState(energy, forces) per configuration, the way the reference code evaluates energies.

Prints one JSON line: {"microseconds_per_evaluation": ..., "configurations": ..., "platform": ...,
"energies_kj_per_mol": [...first 4...]}.
"""
import argparse
import json
import time

import numpy as np
import openmm
import openmm.unit as unit


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--system", required=True)
    parser.add_argument("--positions", required=True, help=".npy of shape (configs, atoms, 3) in nm")
    parser.add_argument("--platform", default="CPU")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with open(args.system) as f:
        system = openmm.XmlSerializer.deserialize(f.read())
    positions = np.load(args.positions)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(args.platform))
    best = None
    energies = []
    for _ in range(args.repeats):
        energies = []
        start = time.perf_counter()
        for x in positions:
            context.setPositions(x)
            state = context.getState(getEnergy=True, getForces=True)
            energies.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
            state.getForces(asNumpy=True)
        elapsed = time.perf_counter() - start
        best = elapsed if best is None else min(best, elapsed)
    print(json.dumps({
        "microseconds_per_evaluation": best / len(positions) * 1e6,
        "configurations": len(positions),
        "platform": args.platform,
        "energies_kj_per_mol": energies[:4],
    }))


if __name__ == "__main__":
    main()

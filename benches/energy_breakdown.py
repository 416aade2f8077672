#!/usr/bin/env python3
"""Where an ALDP energy+force evaluation spends its time in OpenMM (CPU platform), the figures
behind README "Benchmarks":

1. the copy-trick System (from `cargo run --release --example write_copy_system -- X.xml`), one
   force group at a time, per copy, with 1 and 2 threads;
2. its CustomGBForce alone, as is and with trivial expressions of the same structure (one pair
   computed value, one single-particle value, a single-particle and a pair energy term), to split
   the expressions' cost from the kernel's per-pair machinery;
3. the plain Python loop (one setPositions + getState per configuration) on the OBC1 and vacuum
   single-molecule Systems, with 1 and 2 threads.

    python3 benches/energy_breakdown.py --copy-system X.xml [MORE.xml ...] [--configs 1024] [--repeats 5]

With several copy systems (other copy counts or cut-offs), 1. and 2. use the first and the
CustomGBForce alone is also timed, per copy, on each of the others.

Positions: the minimum-energy structure plus 0.01 nm Gaussian noise (seeded), copies centred on a
cubic grid of 4.2 nm spacing (as cgflow places them). Best of --repeats; microseconds per copy or
per configuration.
"""
import argparse
import os
import time

import numpy as np
import openmm
import openmm.unit

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
DATA = os.path.join(ROOT, "data", "alanine_dipeptide")


def load(path):
    with open(path) as f:
        return openmm.XmlSerializer.deserialize(f.read())


def minimum():
    x = np.loadtxt(os.path.join(DATA, "position_min_energy_nm.xyz"), skiprows=2, usecols=(1, 2, 3))
    return x - x.mean(axis=0)


def copy_positions(copies, rng):
    side = int(np.ceil(copies ** (1 / 3) - 1e-9))
    centre = (side - 1) / 2
    x0 = minimum()
    return np.concatenate([
        x0 + rng.normal(0, 0.01, x0.shape) + (np.array([k % side, (k // side) % side, k // side**2]) - centre) * 4.2
        for k in range(copies)
    ])


def best_time(context, repeats, groups=-1):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        context.getState(getEnergy=True, getForces=True, groups=groups)
        best = min(best, time.perf_counter() - start)
    return best


def context_for(system, positions, threads):
    platform = openmm.Platform.getPlatformByName("CPU")
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), platform, {"Threads": threads})
    context.setPositions(positions)
    context.getState(getForces=True)
    return context


def gb_only(system, trivial):
    gb = next(f for f in system.getForces() if f.getName() == "CustomGBForce")
    only = openmm.System()
    for i in range(system.getNumParticles()):
        only.addParticle(system.getParticleMass(i))
    if not trivial:
        only.addForce(openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(gb)))
        return only
    force = openmm.CustomGBForce()
    for i in range(gb.getNumPerParticleParameters()):
        force.addPerParticleParameter(gb.getPerParticleParameterName(i))
    for i in range(gb.getNumParticles()):
        force.addParticle(gb.getParticleParameters(i))
    force.setNonbondedMethod(gb.getNonbondedMethod())
    force.setCutoffDistance(gb.getCutoffDistance())
    force.addComputedValue("I", "r*sr2", openmm.CustomGBForce.ParticlePairNoExclusions)
    force.addComputedValue("B", "I+or", openmm.CustomGBForce.SingleParticle)
    force.addEnergyTerm("charge*B", openmm.CustomGBForce.SingleParticle)
    force.addEnergyTerm("charge1*charge2*r*B1*B2", openmm.CustomGBForce.ParticlePairNoExclusions)
    only.addForce(force)
    return only


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copy-system", required=True, nargs="+")
    parser.add_argument("--configs", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)

    system = load(args.copy_system[0])
    copies = system.getNumParticles() // 22
    positions = copy_positions(copies, rng)
    names = [f.getName() for f in system.getForces()]
    for group, force in enumerate(system.getForces()):
        force.setForceGroup(group)
    print(f"copy system: {copies} copies; us per copy")
    for threads in ("1", "2"):
        context = context_for(system, positions, threads)
        row = {"all": best_time(context, args.repeats)}
        row.update({name: best_time(context, args.repeats, 1 << g) for g, name in enumerate(names)})
        print(f"  Threads={threads}: " + ", ".join(f"{k} {v / copies * 1e6:.1f}" for k, v in row.items()))
    for trivial in (False, True):
        label = "trivial expressions" if trivial else "OBC1 as is"
        times = [best_time(context_for(gb_only(system, trivial), positions, t), args.repeats) for t in ("1", "2")]
        print(f"  CustomGBForce alone, {label}: Threads=1 {times[0] / copies * 1e6:.1f}, "
              f"Threads=2 {times[1] / copies * 1e6:.1f}")

    for path in args.copy_system[1:]:
        other = load(path)
        n = other.getNumParticles() // 22
        cutoff = next(f for f in other.getForces() if f.getName() == "CustomGBForce").getCutoffDistance()
        cutoff = cutoff.value_in_unit(openmm.unit.nanometer)
        at = copy_positions(n, rng)
        times = [best_time(context_for(gb_only(other, False), at, t), args.repeats) for t in ("1", "2")]
        print(f"  CustomGBForce alone, {n} copies, cut-off {cutoff} nm: Threads=1 {times[0] / n * 1e6:.1f}, "
              f"Threads=2 {times[1] / n * 1e6:.1f}")

    x0 = minimum()
    configs = [x0 + rng.normal(0, 0.01, x0.shape) for _ in range(args.configs)]
    print(f"Python loop, {args.configs} configurations; us per configuration")
    for name in ("aldp_obc1", "aldp_vacuum"):
        single = load(os.path.join(DATA, f"{name}.xml"))
        for threads in ("2", "1"):
            context = context_for(single, configs[0], threads)
            best = float("inf")
            for _ in range(3):
                start = time.perf_counter()
                for x in configs:
                    context.setPositions(x)
                    state = context.getState(getEnergy=True, getForces=True)
                    state.getPotentialEnergy()
                    state.getForces(asNumpy=True)
                best = min(best, time.perf_counter() - start)
            print(f"  {name}, Threads={threads}: {best / len(configs) * 1e6:.1f}")


if __name__ == "__main__":
    main()

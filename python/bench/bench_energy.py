"""Per-configuration cost of cgflow.Energy.evaluate on 1024 alanine dipeptide configurations,
against the Rust API on the same Energy (no Python in the loop) and against a plain OpenMM Python
loop (one Context, setPositions + getState per configuration), all in this one process.

    .venv/bin/python python/bench/bench_energy.py [--configs 1024] [--repeats 5] [--platform CPU]

Prints microseconds per configuration (best of the repeats) and the ratios. A benchmark, not a test:
no thresholds.
"""

import argparse
import os
import time
from pathlib import Path

import numpy as np
import openmm
import openmm.app

import cgflow

ROOT = Path(__file__).resolve().parents[2]
ALDP = ROOT / "data" / "alanine_dipeptide"


def best_of(repeats, call):
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return best


def openmm_loop(system, platform, properties, x):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform), properties)

    def run():
        for positions in x:
            context.setPositions(positions)
            context.getState(getEnergy=True, getForces=True)

    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--platform", default="CPU")
    args = parser.parse_args()

    pdb = openmm.app.PDBFile(str(ALDP / "min_energy.pdb"))
    x0 = np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(openmm.unit.nanometer))
    x = x0[np.newaxis] + 0.01 * np.random.default_rng(1).standard_normal((args.configs,) + x0.shape)
    system = openmm.XmlSerializer.deserialize((ALDP / "aldp_obc1.xml").read_text())
    n = args.configs
    print(f"{n} ALDP configurations, platform {args.platform}, {os.cpu_count()} CPUs, best of {args.repeats}")

    energy = cgflow.Energy(system, platform=args.platform)
    energy.evaluate(x[:8])  # contexts warm
    flat = np.ascontiguousarray(x, dtype="<f8").tobytes()
    # Interleaved, so that a change in the machine's load hits both alike; best of the repeats.
    rust, python = float("inf"), float("inf")
    for _ in range(args.repeats):
        rust = min(rust, energy._native.time_rust_evaluate(flat, 1))
        python = min(python, best_of(1, lambda: energy.evaluate(x)))
    rows = [
        ("cgflow Rust API (OpenMmEnergy::evaluate_kj)", rust),
        ("cgflow Python (cgflow.Energy.evaluate)", python),
    ]
    if args.platform == "CPU":
        variants = [("OpenMM Python loop, default threads", {}), ("OpenMM Python loop, Threads=1", {"Threads": "1"})]
    else:
        variants = [("OpenMM Python loop", {})]
    for name, properties in variants:
        loop = openmm_loop(system, args.platform, properties, x)
        loop()
        rows.append((name, best_of(args.repeats, loop)))
    print(f"{'':48} {'us/config':>10} {'vs Rust':>8}")
    for name, seconds in rows:
        print(f"{name:48} {1e6 * seconds / n:10.1f} {seconds / rust:8.3f}")
    print(f"Python layer overhead over Rust: {100 * (python / rust - 1):+.1f} %")
    print(f"speedup of cgflow.Energy over the OpenMM Python loop: "
          + ", ".join(f"{s / python:.2f}x ({name.split(', ')[-1]})" for name, s in rows[2:]))


if __name__ == "__main__":
    main()

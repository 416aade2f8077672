#!/usr/bin/env python3
"""Writes every K-th frame of a `cgflow md` run folder (cv.f32, cv.json) as a new run folder, as if
the run had recorded every K * steps_per_frame steps (frames K-1, 2K-1, ...).

    tools/subsample_cv.py RUN_DIR K OUT_DIR
"""
import json
import os
import sys

import numpy as np


def main() -> None:
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    source, k, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if k < 1:
        sys.exit("K must be a positive integer")
    with open(os.path.join(source, "cv.json")) as f:
        description = json.load(f)
    walkers, frames, cvs = description["walkers"], description["frames"], len(description["cvs"])
    values = np.fromfile(os.path.join(source, "cv.f32"), dtype="<f4")[: frames * walkers * cvs]
    values = values.reshape(frames, walkers, cvs)[k - 1 :: k]
    os.makedirs(out, exist_ok=True)
    values.tofile(os.path.join(out, "cv.f32"))
    description["frames"] = int(values.shape[0])
    description["steps_per_frame"] = description["steps_per_frame"] * k
    with open(os.path.join(out, "cv.json"), "w") as f:
        json.dump(description, f, indent=1)


if __name__ == "__main__":
    main()

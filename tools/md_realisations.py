#!/usr/bin/env python3
"""How much the MD baseline's tail depends on one realisation.

The committed MD cost curve (results/md_cost_curve/md_cost_curve_raw.json) is stitched from the mean
of 8 groups of 16 walkers up to 1.25e7 evaluations and from one 128-walker run beyond. This script
reads that file and the `cgflow compare --out` file of a second, independent 128-walker run
(`--groups 1`, same rules), and prints, per empty-bin rule:

1. the KLD of both whole runs and their mean at run 1's log-spaced evaluation counts up to the
   end of run 2;
2. the KLD of the mean of 8 groups of 16 walkers of each run at the milestones both reach;
3. for each active-learning log given, the MD evaluations needed to reach its KLD and the speedup,
   against the committed curve and against the same curve with the two-run mean in place of run 1
   where run 2 reaches (the 16-walker mean below 1.25e7 is kept).

Evaluations to reach a KLD: first crossing, log-log interpolation between curve points (as
`cgflow compare` does). Curves of the two runs are sampled at different evaluation counts; the mean
is taken at run 1's points, with run 2 interpolated log-log in between.

    python3 tools/md_realisations.py BASELINE.json RUN2.json [LABEL=log.jsonl ...]
"""
import json
import math
import sys


def points(curve):
    return [(float(e), float(k)) for e, k in curve]


def interpolate(curve, evaluations):
    """KLD of `curve` at `evaluations` (log-log between neighbours); None outside its range."""
    if evaluations < curve[0][0] or evaluations > curve[-1][0]:
        return None
    for (e0, k0), (e1, k1) in zip(curve, curve[1:]):
        if e0 <= evaluations <= e1:
            if e0 == evaluations or not (k0 > 0 and k1 > 0 and math.isfinite(k0) and math.isfinite(k1)):
                return k0 if e0 == evaluations else k1
            t = (math.log(evaluations) - math.log(e0)) / (math.log(e1) - math.log(e0))
            return math.exp(math.log(k0) + t * (math.log(k1) - math.log(k0)))
    return curve[-1][1]


def evaluations_to_reach(curve, kld):
    if curve[0][1] <= kld:
        return curve[0][0], "at most"
    for (e0, k0), (e1, k1) in zip(curve, curve[1:]):
        if k0 > kld >= k1:
            if k1 == kld or not (math.isfinite(k0) and k0 > 0 and k1 > 0):
                return e1, ""
            t = (math.log(kld) - math.log(k0)) / (math.log(k1) - math.log(k0))
            return math.exp(math.log(e0) + t * (math.log(e1) - math.log(e0))), ""
    return curve[-1][0], "at least"


def by_rule(document):
    return {rule["rule"]: rule for rule in document["rules"]}


def whole_run(rule):
    part = next(p for p in rule["parts"] if "whole run" in p["label"])
    return points(part["mean"])


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    baseline = by_rule(json.load(open(sys.argv[1])))
    second = by_rule(json.load(open(sys.argv[2])))
    logs = []
    for arg in sys.argv[3:]:
        label, path = arg.split("=", 1)
        last = [json.loads(line) for line in open(path) if line.strip()][-1]
        logs.append((label, float(last["evaluations"]), float(last["kld"])))
    for name, rule in baseline.items():
        if name not in second:
            continue
        run1 = whole_run(rule)
        run2 = whole_run(second[name])
        stitched = points(rule["stitched"])
        # Where the stitched curve leaves the mean of the 16-walker groups for the whole run.
        switch = rule["parts"][0]["mean"][-1][0]
        reach = run2[-1][0]
        # The stitched curve with the two-run mean where both whole runs exist beyond that point.
        mean_part = [(e, 0.5 * (k + interpolate(run2, e))) for e, k in run1 if switch < e <= reach]
        revised = [p for p in stitched if p[0] <= switch] + mean_part + [p for p in stitched if p[0] > reach]
        print(f"## {name}")
        print()
        # Consistency of the two runs where both have 8 independent groups of 16 walkers.
        for label, document in (("run 1", rule), ("run 2", second[name])):
            for milestone in document["milestones"]:
                for entry in milestone["by_curve"]:
                    if entry["curve"].startswith("mean of") and entry["kld"] is not None:
                        se = entry["standard_error"]
                        se_text = f" ± {se:.4f}" if se is not None else ""
                        print(f"- {label}, {entry['curve']}, at {milestone['evaluations']:.0e}: {entry['kld']:.4f}{se_text}")
        print()
        print(f"Whole runs of 128 walkers (the mean replaces run 1 in the revised curve of the last table beyond {switch:.4g} only):")
        print()
        print("| evaluations | run 1 (committed) | run 2 | mean |")
        print("|---:|---:|---:|---:|")
        for e, k in run1:
            if e >= 1e6 and e <= reach:
                other = interpolate(run2, e)
                print(f"| {e:.3g} | {k:.4f} | {other:.4f} | {0.5 * (k + other):.4f} |")
        print()
        if logs:
            print("| run | evaluations | KLD | MD to reach, committed curve | speedup | MD to reach, two-run mean | speedup |")
            print("|---|---:|---:|---:|---:|---:|---:|")
            for label, evaluations, kld in logs:
                cells = []
                for curve in (stitched, revised):
                    e, bound = evaluations_to_reach(curve, kld)
                    mark = {"at least": "> ", "at most": "< "}.get(bound, "")
                    cells += [f"{mark}{e:.3g}", f"{mark}{e / evaluations:.1f}"]
                print(f"| {label} | {evaluations:.3g} | {kld:.4f} | " + " | ".join(cells) + " |")
            print()


if __name__ == "__main__":
    main()

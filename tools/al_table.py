#!/usr/bin/env python3
"""Markdown table of an ALDP active-learning run: one row per iteration of `log.jsonl` (points,
evaluations and their split, wall time, label ESS, KLD) with the speedups over MD that
`cgflow compare --method-points LOG` printed for it (its stdout, saved as SPEEDUP_TXT), one
column per empty-bin rule. Used for the tables in results/aldp_al_fast/README.md.

    python3 tools/al_table.py runs/al-fast/log.jsonl results/aldp_al_fast/speedup.txt
"""
import json
import re
import sys


def speedups(path):
    """{rule: [speedup text per method point]} from the compare output, in file order."""
    by_rule, rule = {}, None
    header = re.compile(r"^speedup of .* at equal KLD \((.+)\):$")
    row = re.compile(r"^\s+\S+ evaluations, KLD\s+\S+: (>?\s*[0-9.]+)")
    for line in open(path):
        m = header.match(line)
        if m:
            rule = m.group(1)
            by_rule[rule] = []
            continue
        m = row.match(line)
        if m and rule is not None:
            # "> x": a lower bound (MD never reaches that KLD), kept as text.
            text = m.group(1)
            value = float(text.lstrip("> "))
            by_rule[rule].append(f"> {value:.1f}" if text.startswith(">") else value)
        elif not line.startswith(" "):
            rule = None
    return by_rule


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: al_table.py LOG_JSONL SPEEDUP_TXT")
    log = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    rules = speedups(sys.argv[2])
    for rule, values in rules.items():
        if len(values) != len(log):
            sys.exit(f"{sys.argv[2]}: {len(values)} speedups under {rule}, {len(log)} log entries")
    names = [r.split(":0.0001")[0] for r in rules]
    print("| iteration | train / test points | evaluations | training by energy | labels | test labels "
          "| wall [s] | label ESS | KLD | " + " | ".join(f"speedup ({n})" for n in names) + " |")
    print("|" + "---:|" * (9 + len(names)))
    for i, e in enumerate(log):
        c = e["costs"]
        cells = [str(e["iteration"]), f"{e['train_points']} / {e['test_points']}", f"{e['evaluations']:.3e}",
                 f"{c['energy_training']:.2e}", f"{c['labels']:.2e}", f"{c['test_labels']:.1e}",
                 f"{e['wall_s']:.0f}", f"{100 * e['label_ess_fraction']:.0f} %", f"{e['kld']:.4f}"]
        for values in rules.values():
            v = values[i]
            cells.append(v if isinstance(v, str) else f"{v:.1f}")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

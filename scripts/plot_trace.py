#!/usr/bin/env python3
"""scripts/plot_trace.py: draw a zerotrain Chrome trace (`zerotrain train --trace FILE`) as a PNG.

One row per rank and track (compute: forward, each unit's backward, the optimizer step;
communication: each collective on the comm thread), over a window of one training step, so that
bucket reductions overlapping the backward pass are visible at a glance. This is how
docs/img/trace.png was made; the real trace opens in https://ui.perfetto.dev or chrome://tracing.

    mpirun -n 2 zerotrain train --config configs/tiny.yaml --steps 6 --sample 0 --trace trace.json \\
        --set zero_optimization.stage=2 --set zero_optimization.overlap_comm=true \\
        --set zero_optimization.reduce_bucket_size=100000 --set training.eval_interval=0
    python3 scripts/plot_trace.py trace.json docs/img/trace.png [--step K] [--title TEXT]

--step K picks the K-th training step (1-based, by rank 0's forward spans; default: the last).
Needs matplotlib (Debian: python3-matplotlib); nothing else in zerotrain does, so it is not in
scripts/install-deps.sh.
"""
import argparse
import json
import sys

COMPUTE, COMM = 0, 1
COLORS = {  # by the span name's first word
    "forward": "#4e79a7", "backward": "#59a14f", "step": "#b07aa1",
    "reduce_scatter_v": "#e15759", "reduce_scatter": "#e15759", "all_reduce": "#f28e2b",
    "all_gather": "#edc948", "all_gather_v": "#edc948", "broadcast": "#76b7b2", "all_to_all": "#9c755f",
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trace")
    ap.add_argument("png")
    ap.add_argument("--step", type=int, default=0, help="training step to show (1-based; default the last)")
    ap.add_argument("--title", default="")
    a = ap.parse_args()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError:
        sys.exit("plot_trace.py: needs matplotlib (apt-get install python3-matplotlib)")

    doc = json.load(open(a.trace))
    spans = [e for e in doc["traceEvents"] if e.get("ph") == "X"]
    ranks = sorted({e["pid"] for e in spans})
    # The window: from rank 0's K-th forward to the end of its K-th step (every rank's spans in it).
    fwd = sorted(e["ts"] for e in spans if e["pid"] == ranks[0] and e["tid"] == COMPUTE and e["name"] == "forward")
    steps = sorted(e["ts"] + e["dur"] for e in spans if e["pid"] == ranks[0] and e["tid"] == COMPUTE and e["name"] == "step")
    if not fwd or not steps:
        sys.exit("plot_trace.py: no forward/step spans of rank %d in %s" % (ranks[0], a.trace))
    k = (a.step or len(fwd)) - 1
    if not 0 <= k < len(fwd):
        sys.exit("plot_trace.py: --step %d: the trace has %d steps" % (a.step, len(fwd)))
    t0 = fwd[k] - 2000  # 2 ms of margin: rank 1 may start a little earlier
    t1 = next(s for s in steps if s > fwd[k]) + 2000

    rows = [(r, t) for r in ranks for t in (COMPUTE, COMM)]
    fig, ax = plt.subplots(figsize=(12, 0.75 * len(rows) + 1.4), dpi=110)
    overlap_ms = {r: 0.0 for r in ranks}
    for i, (r, t) in enumerate(rows):
        y = len(rows) - 1 - i
        for e in spans:
            if e["pid"] != r or e["tid"] != t or e["ts"] + e["dur"] < t0 or e["ts"] > t1:
                continue
            kind = e["name"].split(" ")[0]
            ax.broken_barh([((e["ts"] - t0) / 1e3, max(e["dur"], 1.0) / 1e3)], (y - 0.35, 0.7),
                           facecolors=COLORS.get(kind, "#bab0ac"), edgecolor="white", linewidth=0.4)
        if t == COMM:  # comm time that ran during this rank's backward compute
            comp = [(e["ts"], e["ts"] + e["dur"]) for e in spans
                    if e["pid"] == r and e["tid"] == COMPUTE and e["name"].startswith("backward") and t0 <= e["ts"] <= t1]
            for e in spans:
                if e["pid"] == r and e["tid"] == COMM and t0 <= e["ts"] <= t1:
                    for b0, b1 in comp:
                        overlap_ms[r] += max(0.0, min(b1, e["ts"] + e["dur"]) - max(b0, e["ts"])) / 1e3
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(["rank %d %s" % (r, "compute" if t == COMPUTE else "communication") for r, t in reversed(rows)])
    ax.set_xlim(0, (t1 - t0) / 1e3)
    ax.set_xlabel("ms from the start of step %d" % (k + 1))
    title = a.title or ("one training step, %d ranks: bucket reduce-scatters (comm thread) run while "
                        "backward continues" % len(ranks))
    ax.set_title(title + "\n" + ", ".join("rank %d: %.1f ms of communication inside backward spans" % (r, overlap_ms[r])
                                          for r in ranks), fontsize=10)
    used = sorted({e["name"].split(" ")[0] for e in spans if t0 <= e["ts"] <= t1})
    ax.legend(handles=[Patch(color=COLORS.get(n, "#bab0ac"), label=n) for n in used],
              loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(a.png)
    print("plot_trace.py: wrote %s (step %d, %.1f ms)" % (a.png, k + 1, (t1 - t0) / 1e3))


if __name__ == "__main__":
    main()

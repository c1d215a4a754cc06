#!/usr/bin/env python3
"""tests/apps/test_bench_cli.py: `zerotrain bench comm|overlap|optim` as a user runs them.

comm at 2 ranks with tiny sizes: the table has the nccl-tests columns, every op has a row, the JSON
lines have their fields and every #wrong is 0. overlap at 2 ranks with a tiny model for stages 1-3:
every JSON field is present and finite, t_comm > 0, and the table is printed. optim with one small
size: the JSON lines and the table. Bad arguments exit 2 with one line. Timings are never asserted
(tests never assert timings: the machine is shared).
Usage: test_bench_cli.py ZEROTRAIN MPIEXEC
"""
import json
import math
import os
import subprocess
import sys
import tempfile

ZT = sys.argv[1]
MPIEXEC = sys.argv[2] if len(sys.argv) > 2 else "mpiexec"
env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1")
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def run(args, ranks=0):
    cmd = ([MPIEXEC, "-n", str(ranks), "--oversubscribe"] if ranks else []) + [ZT, *args]
    return subprocess.run(cmd, capture_output=True, encoding="utf-8", errors="replace", timeout=240, env=env)


def jsonl(path):
    return [json.loads(l) for l in open(path) if l.strip()] if os.path.exists(path) else []


OPS = ["all_reduce", "reduce_scatter", "reduce_scatter_v", "all_gather", "all_gather_v", "broadcast", "all_to_all"]

with tempfile.TemporaryDirectory() as tmp:
    # ---- comm: 2 ranks, 1 KiB and 4 KiB, every op, communicator and raw MPI.
    out = os.path.join(tmp, "comm.jsonl")
    r = run(["bench", "comm", "--min-bytes", "1024", "--max-bytes", "4096", "--trials", "2", "--warmup", "1",
             "--iters", "5", "--json", out], ranks=2)
    check(r.returncode == 0, f"bench comm exits 0 (got {r.returncode}; {r.stderr.strip()[-300:]})")
    header = next((l for l in r.stdout.splitlines() if "#wrong" in l), "")
    cols = header.replace("|", " ").split()
    check(cols[:9] == ["size", "count", "type", "op", "iters", "time", "algbw", "busbw", "#wrong"],
          f"table columns size count type op iters time algbw busbw #wrong ({cols})")
    rows = [l.split() for l in r.stdout.splitlines() if l.strip() and not l.startswith("#") and l.split()[0].isdigit()]
    check({x[3] for x in rows} == set(OPS), f"a table row for every op ({sorted({x[3] for x in rows})})")
    check(len(rows) == 2 * len(OPS) and all(x[8] == "0" for x in rows), "2 sizes x 7 ops, #wrong 0 in every row")
    lines = jsonl(out)
    comm = [l for l in lines if l.get("impl") == "comm"]
    mpi = [l for l in lines if l.get("impl") == "mpi"]
    keys = {"bench", "op", "dtype", "ranks", "size", "count", "iters", "time_us", "algbw_gbs", "busbw_gbs", "wrong"}
    check(len(comm) == 14 and all(keys <= set(l) for l in comm), f"14 comm JSON lines with {sorted(keys)}")
    check(len(mpi) == 14, f"raw MPI beside every f32 op ({len(mpi)} lines)")
    check(all(l["wrong"] == 0 and l["ranks"] == 2 and l["time_us"] > 0 for l in lines), "JSON: wrong 0, ranks 2, time > 0")
    ar = [l for l in comm if l["op"] == "all_reduce"]
    ag = [l for l in comm if l["op"] == "all_gather"]
    check(all(abs(l["busbw_gbs"] - l["algbw_gbs"]) <= 1e-3 * l["algbw_gbs"] + 1e-4 for l in ar) and
          all(abs(l["busbw_gbs"] - l["algbw_gbs"] / 2) <= 1e-3 * l["algbw_gbs"] + 1e-4 for l in ag),
          "busbw factors at 2 ranks: all_reduce x1, all_gather x1/2")
    check(all(l["size"] == l["count"] * 4 for l in comm), "size = count x 4 bytes (f32)")

    # 16-bit and 3 ranks (uneven parts of the _v ops: rank 0 half a share), JSON on stdout.
    r = run(["bench", "comm", "--max-bytes", "1024", "--trials", "1", "--iters", "3", "--dtype", "bf16",
             "--ops", "reduce_scatter_v,all_gather_v,all_to_all", "--json", "-", "--no-table"], ranks=3)
    lines = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
    check(r.returncode == 0 and len(lines) >= 3 and all(l["wrong"] == 0 and l["dtype"] == "bf16" for l in lines),
          f"bf16 at 3 ranks, --json -: exit 0, #wrong 0 ({r.returncode}, {len(lines)} lines; {r.stderr[-200:]})")
    check(not any(l.startswith("#") for l in r.stdout.splitlines()), "--no-table: only JSON on stdout")

    r = run(["bench", "comm", "--ops", "all_reduce,bogus"])
    check(r.returncode == 2 and "unknown op `bogus`" in r.stderr and len(r.stderr.strip().splitlines()) == 1,
          f"unknown op: exit 2, one line ({r.returncode}: {r.stderr.strip()[:200]})")

    # ---- overlap: 2 ranks, tiny GPT, stages 1-3.
    out = os.path.join(tmp, "overlap.jsonl")
    r = run(["bench", "overlap", "--layers", "2", "--width", "64", "--seq", "16", "--micro-batch", "2",
             "--bucket", "8000", "--steps", "3", "--warmup", "1", "--json", out], ranks=2)
    check(r.returncode == 0, f"bench overlap exits 0 (got {r.returncode}; {r.stderr.strip()[-300:]})")
    check("hidden" in r.stdout and "comm/compute" in r.stdout, "overlap table printed")
    lines = jsonl(out)
    check([l.get("stage") for l in lines] == [1, 2, 3], f"one JSON line per stage 1, 2, 3 ({[l.get('stage') for l in lines]})")
    fields = ["t_off_ms", "t_on_ms", "t_comm_ms", "t_comm_on_ms", "t_compute_ms", "comm_compute_ratio",
              "hidden_fraction", "speedup", "concurrent_ms"]
    for l in lines:
        vals = [l.get(f) for f in fields]
        check(all(isinstance(v, (int, float)) and math.isfinite(v) for v in vals),
              f"stage {l.get('stage')}: {', '.join(fields)} present and finite ({vals})")
        check(l.get("t_comm_ms", 0) > 0 and l.get("t_off_ms", 0) > 0 and l.get("t_on_ms", 0) > 0,
              f"stage {l.get('stage')}: t_comm > 0 and step times > 0")
        check(l.get("ranks") == 2 and l.get("params", 0) > 0 and l.get("buckets", 0) >= 1 and
              isinstance(l.get("comm_ms_by_op"), dict) and l["comm_ms_by_op"],
              f"stage {l.get('stage')}: ranks, params, buckets, comm_ms_by_op")
    by_op = {l["stage"]: set(l.get("comm_ms_by_op", {})) for l in lines}
    check("all_reduce" in by_op.get(1, set()) and "reduce_scatter_v" in by_op.get(2, set()) and
          {"all_gather_v", "reduce_scatter_v"} <= by_op.get(3, set()),
          f"the collectives of each stage: 1 all_reduce, 2 reduce_scatter_v, 3 all_gather_v + reduce_scatter_v ({by_op})")

    r = run(["bench", "overlap", "--steps", "1"])
    check(r.returncode == 2 and "at least 2 ranks" in r.stderr, f"overlap on 1 rank: exit 2 naming the need ({r.stderr.strip()[:200]})")

    # ---- optim: one small size, one thread.
    out = os.path.join(tmp, "optim.jsonl")
    r = run(["bench", "optim", "--threads", "1", "--sizes", "64K", "--iters", "3", "--copy-mib", "8",
             "--copy-reps", "2", "--json", out])
    check(r.returncode == 0 and "params/s" in r.stdout, f"bench optim exits 0 with a table ({r.stderr.strip()[-200:]})")
    lines = jsonl(out)
    kinds = [l.get("bench") for l in lines]
    check(kinds == ["copy_bw", "adam", "adam_checksum"], f"optim JSON lines copy_bw, adam, adam_checksum ({kinds})")
    adam = next((l for l in lines if l.get("bench") == "adam"), {})
    check(adam.get("params") == 65536 and adam.get("params_per_s", 0) > 0 and adam.get("gbps", 0) > 0 and
          adam.get("fraction_of_copy_bw", 0) > 0, f"adam: params, params/s, GB/s, fraction of the copy floor ({adam})")

if failures:
    print(f"{len(failures)} check(s) failed")
    sys.exit(1)
print("all checks passed")

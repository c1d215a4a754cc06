"""tests/apps/cli_util.py: what the command-line test drivers (tests/apps/*.py, tests/slurm) share.

  check = Checks()            check(cond, "what") prints `ok   what` or `FAIL what` and counts it;
  check.finish()              prints the totals and exits 1 if any check failed, else 0;
  mpi_env(**extra)            the environment for mpiexec as root (one OpenMP thread per rank);
  command(zt, args, ranks=1)  the binary alone (one rank: MPI's singleton start) or under mpiexec;
  run(zt, args, ...)          runs it with a timeout and captures stdout/stderr as text;
  losses(path)                the per-step losses of a --json-log file (not the summary event).
"""
import json
import os
import subprocess
import sys
import time


class Checks:
    def __init__(self):
        self.passed = 0
        self.failures = []
        self.t0 = time.time()

    def __call__(self, cond, what):
        self.passed += bool(cond)
        print(("ok   " if cond else "FAIL ") + what, flush=True)
        if not cond:
            self.failures.append(what)
        return bool(cond)

    def finish(self, extra_failed=0):
        failed = len(self.failures) + extra_failed
        print(f"{self.passed} checks passed, {failed} failed ({time.time() - self.t0:.0f} s)", flush=True)
        sys.exit(1 if failed else 0)


def mpi_env(**extra):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1")
    env.update(extra)
    return env


def command(zt, args, ranks=1, mpiexec="mpiexec"):
    if ranks <= 1:
        return [zt, *args]
    return [mpiexec, "-n", str(ranks), "--oversubscribe", zt, *args]


def run(zt, args, ranks=1, mpiexec="mpiexec", timeout=240, env=None, raw=False):
    """raw: stdout/stderr as bytes (generate prints a byte-level model's raw bytes)."""
    cmd = command(zt, args, ranks, mpiexec)
    if raw:
        return subprocess.run(cmd, capture_output=True, timeout=timeout, env=env or mpi_env())
    return subprocess.run(cmd, capture_output=True, encoding="utf-8", errors="replace", timeout=timeout,
                          env=env or mpi_env())


def losses(path):
    return [json.loads(l)["loss"] for l in open(path) if l.strip() and '"event"' not in l]

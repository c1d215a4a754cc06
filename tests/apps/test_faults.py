#!/usr/bin/env python3
"""tests/apps/test_faults.py: fault injection on the real zerotrain binary under mpirun (issue #10).

Every scenario is bounded (subprocess timeouts, comm.timeout_s of a few seconds) and ends with a
check that no zerotrain process of the scenario survives (pgrep on the scenario's own folder,
which is on every rank's command line). Scenarios:
  kill -9        a rank SIGKILLs itself mid-step (ZT_FAULT=kill): the job exits non-zero within the
                 bound (mpirun ends it); with mpirun --enable-recovery (mpirun does NOT end it) the
                 watchdog does, naming the rank whose process has exited
  stall          a rank sleeps past comm.timeout_s (ZT_FAULT=stall): exit 124 within timeout + 8 s,
                 the report names the collective, the step and the missing rank
  signals        SIGINT once to every rank: checkpoint at the next step boundary, exit 85 (as
                 SIGTERM/SIGUSR1; SIGUSR1 + bitwise resume is tested in test_zerotrain_cli.py);
                 SIGINT twice: exit 130 at once with a message
  numerics       a NaN gradient (stage 2, in the other rank's partition) names the step and the
                 parameter; a NaN weight names the loss at its step and the weight; bf16 with
                 bf16.check_grad_overflow skips the step instead
  bad input      ranks with different config files: exit 2 naming the rank and the first differing
                 key; a truncated data file under mpirun: exit 2, printed once
  disk full      a small tmpfs: the save fails with a clear message, non-zero exit, the previous
                 checkpoint still inspects and loads
  (A save killed in the middle is tests/io/test_checkpoint_crash.cpp.)
Usage: test_faults.py ZEROTRAIN SRC_DIR [MPIEXEC]
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ZT, SRC = sys.argv[1], sys.argv[2]
MPIEXEC = sys.argv[3] if len(sys.argv) > 3 else "mpiexec"
TINY = os.path.join(SRC, "configs", "tiny.yaml")
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1")
ENV.pop("ZT_FAULT", None)
SMALL = ["--sample", "0", "--set", "model.n_layer=2", "--set", "model.n_embd=64", "--set", "model.seq_len=64",
         "--set", "training.eval_interval=0", "--set", "steps_per_print=1", "--set", "train_micro_batch_size_per_gpu=4",
         "--set", "zero_optimization.stage=2", "--set", "scheduler.params.warmup_num_steps=2",
         "--set", "scheduler.params.total_num_steps=100000"]
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cli_util import Checks  # noqa: E402

check = Checks()


def mpirun(tag, args, fault=None, n=2, timeout=90, mpi_args=(), extra_env=None):
    """Runs `mpirun -n N zerotrain train ...` with the folder `tag` on its command line (--json-log)."""
    env = dict(ENV, **(extra_env or {}))
    cmd = [MPIEXEC, *mpi_args, "-n", str(n), "--oversubscribe"]
    if fault:
        env["ZT_FAULT"] = fault
        cmd += ["-x", "ZT_FAULT"]
    cmd += [ZT, "train", "--config", TINY, *SMALL, "--json-log", os.path.join(tag, "log.jsonl"), *args]
    t0 = time.time()
    try:
        r = subprocess.run(cmd, capture_output=True, encoding="utf-8", errors="replace", timeout=timeout, env=env)
        rc, out, err = r.returncode, r.stdout, r.stderr
    except subprocess.TimeoutExpired as e:
        rc, out, err = "timeout", str(e.stdout), str(e.stderr)
    return rc, out, err, time.time() - t0


def survivors(tag, wait=5.0):
    """zerotrain processes whose command line names `tag`, after up to `wait` s for them to go."""
    deadline = time.time() + wait
    while True:
        r = subprocess.run(["pgrep", "-f", tag], capture_output=True, text=True)
        pids = [p for p in r.stdout.split() if int(p) != os.getpid()]
        if not pids or time.time() > deadline:
            for p in pids:  # do not leave them to the next test
                try:
                    os.kill(int(p), signal.SIGKILL)
                except OSError:
                    pass
            return pids
        time.sleep(0.2)


def rank_pids(tag, n, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        # Anchored: mpirun's own command line holds the same words.
        r = subprocess.run(["pgrep", "-f", f"^{ZT} train .*{tag}"], capture_output=True, text=True)
        pids = [int(p) for p in r.stdout.split()]
        if len(pids) == n:
            return pids
        time.sleep(0.1)
    return []


def wait_log_lines(path, k, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path) and sum(1 for _ in open(path)) >= k:
            return True
        time.sleep(0.1)
    return False


root = tempfile.mkdtemp(prefix="zt-faults-")
try:
    # ---- kill -9 of one rank mid-step --------------------------------------------------------
    d = os.path.join(root, "kill")
    os.makedirs(d)
    rc, out, err, dt = mpirun(d, ["--steps", "50", "--set", "comm.timeout_s=10"], fault="kill:rank=1:step=5")
    check(rc not in (0, "timeout") and dt < 25, f"kill -9 of rank 1 mid-step: job exits non-zero in {dt:.1f} s (rc {rc})")
    check("SIGKILL in the middle of step 5" in err, "the hook killed rank 1 at step 5")
    check(survivors(d) == [], "no zerotrain process left after kill -9")

    # The same with mpirun --enable-recovery: mpirun no longer ends the job, the watchdog must.
    d = os.path.join(root, "kill-recovery")
    os.makedirs(d)
    rc, out, err, dt = mpirun(d, ["--steps", "50", "--set", "comm.timeout_s=4"], fault="kill:rank=1:step=5",
                              mpi_args=["--enable-recovery"])
    check(rc != "timeout" and dt < 4 + 10, f"kill -9 with --enable-recovery: the watchdog ends the job in {dt:.1f} s (rc {rc})")
    check("watchdog (rank 0)" in err and "at training step 5" in err and "missing: rank 1 (its process" in err
          and "has exited" in err, "the report names the step and rank 1 as exited: " + err.strip()[-400:])
    check(survivors(d) == [], "no zerotrain process left after the watchdog's abort")

    # ---- one rank stalls past the timeout ----------------------------------------------------
    d = os.path.join(root, "stall")
    os.makedirs(d)
    rc, out, err, dt = mpirun(d, ["--steps", "50", "--set", "comm.timeout_s=4"], fault="stall:rank=1:step=5")
    line = next((l for l in err.splitlines() if "watchdog (rank 0)" in l), "")
    check(rc == 124 and dt < 4 + 8, f"stall: exit 124 within timeout + 8 s ({rc}, {dt:.1f} s)")
    check("reduce_scatter_v #" in line and "bytes" in line and "at training step 5" in line,
          "the report names the collective (op, sequence number, bytes) and the step: " + line[:300])
    check("missing: rank 1 (at step 5, not in a collective" in line and "waiting in it: rank 0" in line,
          "the report names the missing rank and what it was doing")
    check(survivors(d) == [], "no zerotrain process left after the stall abort")

    # ---- signals -------------------------------------------------------------------------------
    d = os.path.join(root, "sigint")
    os.makedirs(d)
    ck = os.path.join(d, "ck")
    env = dict(ENV)
    log = os.path.join(d, "log.jsonl")
    p = subprocess.Popen([MPIEXEC, "-n", "2", "--oversubscribe", ZT, "train", "--config", TINY, *SMALL,
                          "--json-log", log, "--set", f"checkpoint.dir={ck}", "--steps", "100000"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace", env=env)
    pids = rank_pids(d, 2)
    wait_log_lines(log, 3)
    for pid in pids:  # a Ctrl-C reaching the ranks (mpirun itself kills the job on SIGINT)
        os.kill(pid, signal.SIGINT)
    try:
        out, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    latest = os.path.join(ck, "latest")
    check(p.returncode == 85 and os.path.exists(latest), f"first SIGINT: save at the step boundary and exit 85 ({p.returncode}; {err[-200:]})")
    check("signal received: saving at step" in out, "the log says where it saved")
    check(survivors(d) == [], "no zerotrain process left after SIGINT")

    # One rank, the full tiny model with 128 sequences per step (about 1 s per step on 2 cores):
    # both signals should arrive within one step. Under load the first may land just before a step
    # boundary, whose save then completes before the second arrives ("signal received: saving at
    # step" in the log): the scenario did not happen, so it is run again (at most 3 times).
    for attempt in range(3):
        d = os.path.join(root, f"sigint2-{attempt}")
        os.makedirs(d)
        log = os.path.join(d, "log.jsonl")
        p = subprocess.Popen([ZT, "train", "--config", TINY, "--sample", "0", "--json-log", log, "--steps", "1000",
                              "--set", "train_batch_size=128", "--set", "train_micro_batch_size_per_gpu=128",
                              "--set", f"checkpoint.dir={os.path.join(d, 'ck')}"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace", env=env)
        wait_log_lines(log, 1)
        t0 = time.time()
        p.send_signal(signal.SIGINT)
        time.sleep(0.05)  # two signals sent back to back may merge into one pending signal
        p.send_signal(signal.SIGINT)
        try:
            out, err = p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        dt = time.time() - t0
        if "signal received: saving at step" not in out:
            break
        print(f"note: attempt {attempt + 1}: the first SIGINT reached a step boundary before the second; again",
              flush=True)
    check(p.returncode == 130 and "second SIGINT" in err and dt < 5,
          f"second SIGINT: exit 130 at once with a message ({p.returncode}, {dt:.2f} s; {err.strip()[-200:]})")
    check(not os.path.exists(os.path.join(d, "ck", "latest")), "nothing saved after the second SIGINT")

    # ---- numerics -------------------------------------------------------------------------------
    d = os.path.join(root, "nan-grad")
    os.makedirs(d)
    # blocks.1.* lies in rank 1's half of the flat buffer: rank 0 names it only through the gather.
    rc, out, err, dt = mpirun(d, ["--steps", "6"], fault="nan_grad:rank=0:step=3:param=blocks.1.attn.qkv.weight")
    check(rc == 1 and "error (rank 0): step 3: the gradient holds inf or NaN" in err
          and "first non-finite gradient blocks.1.attn.qkv.weight[0] = nan" in err,
          f"NaN gradient at stage 2: step and parameter named ({rc}; {err.strip()[-300:]})")
    check(survivors(d) == [], "no zerotrain process left after the NaN gradient")

    d = os.path.join(root, "nan-loss")
    os.makedirs(d)
    rc, out, err, dt = mpirun(d, ["--steps", "6"], fault="nan_weight:rank=1:step=3:param=blocks.0.mlp.fc.weight")
    check(rc == 1 and "step 3, micro-batch 0: the loss is nan on rank 1" in err
          and "first non-finite weight is blocks.0.mlp.fc.weight[0] = nan" in err,
          f"NaN loss: step, rank and weight named ({rc}; {err.strip()[-300:]})")
    check(survivors(d) == [], "no zerotrain process left after the NaN loss")

    d = os.path.join(root, "nan-skip")
    os.makedirs(d)
    rc, out, err, dt = mpirun(d, ["--steps", "6", "--set", "bf16.enabled=true", "--set", "bf16.check_grad_overflow=true"],
                              fault="nan_grad:rank=1:step=3:param=wte.weight")
    check(rc == 0 and "1 skipped" in out, f"bf16.check_grad_overflow: the NaN step is skipped ({rc}; {err.strip()[-300:]})")

    # ---- bad input --------------------------------------------------------------------------------
    d = os.path.join(root, "config")
    os.makedirs(d)
    other = os.path.join(d, "other.yaml")
    text = open(TINY).read()
    check("lr: 3.0e-3" in text, "tiny.yaml has the lr line this test edits")
    open(other, "w").write(text.replace("lr: 3.0e-3", "lr: 1.0e-2", 1))
    common = [*SMALL, "--steps", "3", "--json-log", os.path.join(d, "log.jsonl")]
    t0 = time.time()
    r = subprocess.run([MPIEXEC, "--oversubscribe", "-n", "1", ZT, "train", "--config", TINY, *common, ":",
                        "-n", "1", ZT, "train", "--config", other, *common],
                       capture_output=True, encoding="utf-8", errors="replace", timeout=90, env=ENV)
    check(r.returncode == 2 and "rank 1 differs from rank 0" in r.stderr
          and "optimizer.params.lr: 0.003 on rank 0 vs 0.01 on rank 1" in r.stderr
          and r.stderr.count("different configurations") == 1,
          f"ranks with different configs: exit 2 naming the rank and the key, once ({r.returncode}; {r.stderr.strip()[-300:]})")
    check(survivors(d) == [], "no zerotrain process left after the config mismatch")

    d = os.path.join(root, "trunc")
    os.makedirs(d)
    shard = os.path.join(d, "shard.bin")
    with open(shard, "wb") as f:  # an llm.c shard whose header promises 1000 tokens, with 10
        f.write((20240520).to_bytes(4, "little") + (1).to_bytes(4, "little") + (1000).to_bytes(4, "little"))
        f.write(bytes(1012) + bytes(20))
    rc, out, err, dt = mpirun(d, ["--steps", "2", "--set", f"data.path={shard}", "--set", "data.format=llmc"])
    check(rc == 2 and err.count("truncated") == 1 and shard in err, f"truncated data file under mpirun: exit 2, once ({rc}; {err.strip()[-200:]})")
    check(survivors(d) == [], "no zerotrain process left after the bad data")

    # ---- disk full during a save ----------------------------------------------------------------
    d = os.path.join(root, "diskfull")
    os.makedirs(d)
    probe = os.path.join(d, "probe")
    rc, _, err, _ = mpirun(d, ["--steps", "2", "--set", f"checkpoint.dir={probe}"])
    size = sum(os.path.getsize(os.path.join(a, f)) for a, _, fs in os.walk(probe) for f in fs) if rc == 0 else 0
    mnt = os.path.join(d, "mnt")
    os.makedirs(mnt)
    kb = int(size * 1.5 / 1024) + 16  # room for one checkpoint, not two
    m = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kb}k", "tmpfs", mnt], capture_output=True, text=True)
    if rc != 0 or m.returncode != 0:
        print(f"skip disk full: cannot mount a tmpfs here ({m.stderr.strip()}; probe rc {rc})")
    else:
        try:
            ck = os.path.join(mnt, "ck")
            rc1, _, err1, _ = mpirun(d, ["--steps", "2", "--set", f"checkpoint.dir={ck}"])
            check(rc1 == 0, f"first save fits the {kb} KiB tmpfs ({err1.strip()[-200:]})")
            rc2, out2, err2, dt2 = mpirun(d, ["--steps", "4", "--resume", "auto", "--set", f"checkpoint.dir={ck}",
                                              "--set", "checkpoint.keep=2"])
            check(rc2 not in (0, "timeout") and ("disk full" in err2 or "No space left" in err2),
                  f"second save on a full disk: non-zero exit with the reason ({rc2}, {dt2:.1f} s; "
                  + next((l for l in err2.splitlines() if "zerotrain: " in l), err2.strip()[-300:]) + ")")
            check(survivors(d) == [], "no zerotrain process left after the failed save")
            latest = open(os.path.join(ck, "latest")).read().strip() if os.path.exists(os.path.join(ck, "latest")) else ""
            check(latest == "global_step2", f"latest still names the previous checkpoint ({latest})")
            r = subprocess.run([ZT, "ckpt", "inspect", ck], capture_output=True, text=True, timeout=60, env=ENV)
            check(r.returncode == 0, f"the previous checkpoint inspects clean ({r.stdout.strip()[-200:]})")
            r = subprocess.run([ZT, "generate", "--checkpoint", ck, "--prompt", "int ", "--bytes", "4"],
                               capture_output=True, text=True, errors="replace", timeout=60, env=ENV)
            check(r.returncode == 0, f"and loads ({r.stderr.strip()[-200:]})")
        finally:
            subprocess.run(["umount", "-l", mnt], capture_output=True)
    print("killed save: covered by tests/io/test_checkpoint_crash.cpp (SIGKILL mid-shard and at each commit step)")
finally:
    survivors(root, wait=0)
    shutil.rmtree(root, ignore_errors=True)

check.finish()

#!/usr/bin/env python3
"""tests/slurm/test_slurm.py: slurm/train-cpu.sbatch on a real one-node Slurm cluster.

Starts MUNGE and Slurm (slurmctld, slurmd) for this machine alone, as root, everything under one
temporary folder (keys, state, spool, logs; free ports), with no systemd and no cgroups:
ProctrackType=proctrack/linuxproc, TaskPlugin=task/none. Then, through sbatch:
  1. a short job trains 2 ranks (srun --mpi=pmix), exits 0 and leaves its final checkpoint;
  2. a longer job gets SIGUSR1 in its batch shell (`scancel --signal=USR1 --batch`, what
     `#SBATCH --signal=B:USR1@120` does before the time limit): the script forwards it to the
     ranks, they save and exit 85, the script requeues the job, and the requeued run resumes from
     the checkpoint and finishes; its losses equal those of an uninterrupted job bit for bit;
  3. the same with ZT_LAUNCHER=mpirun (mpirun reading the Slurm allocation) and SIGTERM;
  4. slurm/train.sbatch (GPU) as it is, on two pretend GPUs (gres.conf with stand-in device
     files): each task gets its own CUDA_VISIBLE_DEVICES from --gpus-per-task=1.
It also checks that slurm/train.sbatch (GPU) has the same body as the CPU script.
Every daemon is a child of this process (run in the foreground) and is stopped at the end, also
on failure. Installs slurm-wlm and munge with apt-get when missing (needs root or sudo).

Usage: test_slurm.py ZEROTRAIN SRC_DIR
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ZT, SRC = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
T0 = time.time()
BUDGET_S = 480  # waits end by then, well below the ctest TIMEOUT (600): tear down before ctest kills us
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "apps"))
from cli_util import Checks  # noqa: E402

check = Checks()


def fatal(msg):
    print("FAIL " + msg, flush=True)
    print(f"{check.passed} checks passed, {len(check.failures) + 1} failed")
    sys.exit(1)


def ensure_slurm_installed():
    need = [p for p, exe in (("slurm-wlm", "slurmctld"), ("munge", "munged")) if not shutil.which(exe)
            and not os.path.exists("/usr/sbin/" + exe)]
    if not need:
        return
    su = []
    if os.geteuid() != 0:
        if not shutil.which("sudo"):
            fatal(f"Slurm is not installed ({' '.join(need)}) and this user is neither root nor has sudo: "
                  "run scripts/install-deps.sh as root")
        su = ["sudo"]
    print(f"installing {' '.join(need)} with apt-get", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = subprocess.run(su + ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *need], env=env)
    if r.returncode != 0:
        subprocess.run(su + ["apt-get", "update", "-qq"], env=env)
        r = subprocess.run(su + ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *need], env=env)
    if r.returncode != 0:
        fatal(f"apt-get install {' '.join(need)} failed (exit {r.returncode})")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout, what, step=0.2):
    deadline = min(time.time() + timeout, T0 + BUDGET_S)
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


class Cluster:
    """MUNGE + slurmctld + slurmd for this host, all in `root`, all children of this process."""

    def __init__(self, root):
        self.root = root
        self.procs = []  # (name, Popen)
        self.env = None

    def start(self):
        r = self.root
        for d in ("munge", "state", "spool", "log"):
            os.makedirs(os.path.join(r, d), mode=0o700, exist_ok=True)
        key = os.path.join(r, "munge", "munge.key")
        with open(key, "wb") as f:
            f.write(os.urandom(1024))
        os.chmod(key, 0o400)
        sock = os.path.join(r, "munge", "munge.sock")
        self._spawn("munged", ["munged", "--foreground", "--force", f"--socket={sock}", f"--key-file={key}",
                               f"--log-file={r}/log/munged.log", f"--pid-file={r}/munge/munged.pid",
                               f"--seed-file={r}/munge/munged.seed"])
        wait_for(lambda: os.path.exists(sock), 20, "the MUNGE socket")

        # The node as slurmd sees it (CPUs, sockets, cores, threads, memory), so that the config
        # matches the machine and slurmd registers without draining itself.
        node = subprocess.run(["slurmd", "-C"], capture_output=True, text=True).stdout.splitlines()[0]
        host = socket.gethostname().split(".")[0]
        node = re.sub(r"^NodeName=\S+", f"NodeName={host}", node)
        self.conf = os.path.join(r, "slurm.conf")
        with open(self.conf, "w") as f:
            f.write(f"""# one-node test cluster written by tests/slurm/test_slurm.py
ClusterName=zttest
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also how long a requeued job waits before it may start again (default 120 s).
AuthInfo=socket={sock},cred_expire=10
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No systemd and no cgroup control in a container: track processes through /proc, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
# Schedule every few seconds (default 60 s), so that a requeued job starts soon after cred_expire.
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
KillWait=10
MinJobAge=600
# Two pretend GPUs (a count, no device files), so that slurm/train.sbatch's --gpus-per-task=1 is
# scheduled as on a GPU node; the ranks train on the CPU.
GresTypes=gpu
{node} Gres=gpu:2 NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
        with open(os.path.join(r, "gres.conf"), "w") as f:
            f.write(f"NodeName={host} Name=gpu File=/dev/null,/dev/zero\n")
        self.env = dict(os.environ, SLURM_CONF=self.conf)
        self._spawn("slurmctld", ["slurmctld", "-D", "-f", self.conf])
        self._spawn("slurmd", ["slurmd", "-D", "-f", self.conf])
        wait_for(lambda: "idle" in self.sh("sinfo", "-h", "-o", "%T").stdout, 60, "the node to be idle")
        self.host = host

    def _spawn(self, name, argv):
        log = open(os.path.join(self.root, "log", name + ".out"), "w")
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self.procs.append((name, p))
        time.sleep(0.3)
        if p.poll() is not None:
            raise RuntimeError(f"{name} exited at once with code {p.returncode}: "
                               + open(log.name).read()[-500:])

    def sh(self, *argv):
        return subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=60)

    def job(self, jid):
        out = self.sh("scontrol", "show", "job", "-o", str(jid)).stdout
        return dict(re.findall(r"(\w+)=(\S*)", out))

    def stop(self):
        if self.env:
            self.sh("scancel", "--user", "root")
            try:  # jobs end (their slurmstepd and ranks) before the daemons go
                wait_for(lambda: not self.sh("squeue", "-h").stdout.strip(), 30, "the jobs to end")
            except Exception as e:  # noqa: BLE001 (teardown goes on)
                print("teardown: " + str(e))
        for name, p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.procs = []

    def dump_logs(self):
        for name in ("slurmctld.log", "slurmd.log"):
            path = os.path.join(self.root, "log", name)
            if os.path.exists(path):
                print(f"--- last lines of {name} ---")
                print("".join(open(path).readlines()[-25:]))


def submit(cl, out, args, extra_env=None, sbatch_opts=(), script="train-cpu.sbatch"):
    env = dict(cl.env, ZT_BIN=ZT, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    env.update(extra_env or {})
    env.pop("OMP_NUM_THREADS", None)
    r = subprocess.run(["sbatch", "--parsable", f"--output={out}", "--ntasks-per-node=2", "--cpus-per-task=1",
                        *sbatch_opts, os.path.join(SRC, "slurm", script), *args],
                       capture_output=True, text=True, env=env, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"sbatch failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout.strip().split(";")[0]


def wait_done(cl, jid, timeout):
    def done():
        st = cl.job(jid).get("JobState", "")
        return st if st in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY") else None
    return wait_for(done, timeout, f"job {jid} to end", step=0.5)


def text(path):
    return open(path, errors="replace").read() if os.path.exists(path) else ""


def losses(path):
    return {r["step"]: r["loss"] for r in map(json.loads, open(path)) if "event" not in r} if os.path.exists(path) else {}


def main():
    check(open(os.path.join(SRC, "slurm", "train.sbatch")).read().split("# ---- common body")[1]
          == open(os.path.join(SRC, "slurm", "train-cpu.sbatch")).read().split("# ---- common body")[1],
          "slurm/train.sbatch and train-cpu.sbatch share the same body below the #SBATCH lines")
    for s in ("train.sbatch", "train-cpu.sbatch"):
        r = subprocess.run(["bash", "-n", os.path.join(SRC, "slurm", s)], capture_output=True, text=True)
        check(r.returncode == 0, f"bash -n slurm/{s} ({r.stderr.strip()})")
    if os.geteuid() != 0:
        fatal("this test starts slurmctld/slurmd as root (SlurmUser=root): run it as root")
    ensure_slurm_installed()

    tmp = tempfile.mkdtemp(prefix="zt-slurm-")
    cl = Cluster(os.path.join(tmp, "cluster"))
    try:
        t = time.time()
        cl.start()
        print(f"cluster up on {cl.host} in {time.time() - t:.1f} s", flush=True)

        # A fixed corpus, so that the uninterrupted and the resumed job see the same data.
        corpus = os.path.join(tmp, "corpus.txt")
        with open(corpus, "w") as f:
            for name in ("README.md", "docs/zero.md", "DESIGN.md"):
                for base in (SRC, os.path.join(SRC, "..", "shared")):
                    if os.path.exists(os.path.join(base, name)):
                        f.write(open(os.path.join(base, name), errors="replace").read())
                        break
        small = ["--config", os.path.join(SRC, "configs", "tiny.yaml"), "--sample", "0",
                 "--set", f"data.path={corpus}", "--set", "model.n_layer=2", "--set", "model.n_embd=64",
                 "--set", "model.seq_len=64", "--set", "training.eval_interval=0",
                 "--set", "train_micro_batch_size_per_gpu=4", "--set", "zero_optimization.stage=2",
                 "--set", "steps_per_print=100", "--set", "scheduler.params.warmup_num_steps=10"]
        steps = 1500
        long_args = [*small, "--steps", str(steps), "--set", f"scheduler.params.total_num_steps={steps}"]

        # 1. Uninterrupted: trains, exits 0, final checkpoint; its losses are the reference.
        t = time.time()
        out1, log1, ck1 = (os.path.join(tmp, n) for n in ("job1.out", "job1.jsonl", "ck1"))
        j1 = submit(cl, out1, [*long_args, "--json-log", log1], {"ZT_CKPT_DIR": ck1})
        st = wait_done(cl, j1, 200)
        info = cl.job(j1)
        o1 = text(out1)
        check(st == "COMPLETED" and info.get("ExitCode") == "0:0",
              f"job 1 ({j1}) completed with exit 0 ({st}, ExitCode={info.get('ExitCode')}) in {time.time() - t:.1f} s")
        check("starting: srun --mpi=pmix" in o1, "job 1 ran its ranks with srun --mpi=pmix")
        check("ranks 2 on 1 node(s)" in o1 and f"done: {steps} steps" in o1, "job 1 trained 2 ranks to the end")
        check(text(os.path.join(ck1, "latest")).strip() == f"global_step{steps}"
              and os.path.exists(os.path.join(ck1, f"global_step{steps}", "manifest.json")),
              f"job 1 wrote checkpoint global_step{steps} and `latest`")
        ref = losses(log1)
        check(len(ref) == steps, f"job 1 logged {steps} steps (got {len(ref)})")
        if not check(st == "COMPLETED", "job 1 must pass before the signal test"):
            print(o1[-3000:])
            return

        # 2. SIGUSR1 to the batch shell mid-run -> save, exit 85, requeue, resume, finish (srun).
        # 3. The same with mpirun as the launcher (OpenMPI reads the allocation from Slurm) and
        #    SIGTERM (scancel, preemption), which the script passes on as SIGUSR1: mpirun would
        #    answer SIGTERM by killing its ranks.
        for name, launcher, sig in (("job 2", "srun", "USR1"), ("job 3", "mpirun", "TERM")):
            t = time.time()
            tag = name.replace(" ", "")
            out, log, ck = (os.path.join(tmp, tag + ext) for ext in (".out", ".jsonl", ".ck"))
            j = submit(cl, out, [*long_args, "--json-log", log], {"ZT_CKPT_DIR": ck, "ZT_LAUNCHER": launcher})
            n_seen = wait_for(lambda: sum(1 for _ in open(log)) >= 20 if os.path.exists(log) else False,
                              120, f"{name} to log 20 steps", step=0.05)
            r = cl.sh("scancel", f"--signal={sig}", "--batch", j)
            check(r.returncode == 0 and n_seen, f"{name}: scancel --signal={sig} --batch {j} ({r.stderr.strip()})")
            wait_for(lambda: int(cl.job(j).get("Restarts", "0")) >= 1, 60, f"{name} ({j}) to be requeued")
            t_requeue = time.time()
            st = wait_done(cl, j, 240)
            info = cl.job(j)
            o = text(out)
            m = re.search(r"signal received: saving at step (\d+) and exiting \(code 85\)", o)
            n = int(m.group(1)) if m else -1
            check(f"starting: {launcher} " in o, f"{name}: the ranks ran under {launcher}")
            check(m is not None and 0 < n < steps, f"{name}: the ranks saved at step {n} and exited 85")
            check(f"got SIG{sig}: asking the ranks to save" in o,
                  f"{name}: the batch shell trapped SIG{sig} and forwarded it as SIGUSR1")
            check("(restart 0): step exited with code 85" in o and "(restart 0): requeued" in o,
                  f"{name}: the script saw exit code 85 and requeued the job")
            check(st == "COMPLETED" and info.get("Restarts") == "1" and info.get("ExitCode") == "0:0",
                  f"{name} ({j}) completed after 1 restart ({st}, Restarts={info.get('Restarts')}, "
                  f"ExitCode={info.get('ExitCode')}) in {time.time() - t:.1f} s "
                  f"(requeued run {time.time() - t_requeue:.1f} s, including cred_expire=10 s)")
            check(f"resume    {ck}/global_step{n} at step {n} (saved by 2 ranks at stage 2)" in o,
                  f"{name}: the requeued run resumed from global_step{n}")
            check("(restart 1): step exited with code 0" in o and f"done: {steps} steps" in o,
                  f"{name}: the requeued run trained to the end")
            check(text(os.path.join(ck, "latest")).strip() == f"global_step{steps}",
                  f"{name}: final checkpoint is latest")
            res = losses(log)  # the requeued run's log: steps n+1 .. steps
            check(sorted(res) == list(range(n + 1, steps + 1)), f"{name}: the resumed run logged steps {n + 1}..{steps}")
            check(res and all(ref.get(k) == v for k, v in res.items()),
                  f"{name}: the resumed losses equal the uninterrupted job's, bit for bit")
            if check.failures:
                print(o[-4000:])

        # 4. The GPU script as it is (--gpus-per-task=1 on the pretend GPUs), on one node.
        t = time.time()
        out5, ck5 = os.path.join(tmp, "job5.out"), os.path.join(tmp, "ck5")
        # ZT_BIN: a wrapper that notes the GPU Slurm gave each task, then runs zerotrain.
        wrapper = os.path.join(tmp, "zt-wrapper.sh")
        with open(wrapper, "w") as f:
            f.write(f'#!/bin/sh\necho "$CUDA_VISIBLE_DEVICES" > {tmp}/gpu.$SLURM_PROCID\nexec {ZT} "$@"\n')
        os.chmod(wrapper, 0o755)
        j5 = submit(cl, out5, [*small, "--steps", "20"], {"ZT_CKPT_DIR": ck5, "ZT_BIN": wrapper},
                    sbatch_opts=["--nodes=1"], script="train.sbatch")
        st = wait_done(cl, j5, 120)
        o5, info = text(out5), cl.job(j5)
        gpus = sorted(text(os.path.join(tmp, f"gpu.{i}")).strip() for i in range(2))
        check(st == "COMPLETED" and "gpu:1" in info.get("TresPerTask", "") and gpus == ["0", "1"]
              and "done: 20 steps" in o5 and "ranks 2 on 1 node(s)" in o5,
              f"job 5 ({j5}, train.sbatch, --gpus-per-task=1): each task got its own GPU, 2 ranks trained "
              f"({st}, TresPerTask={info.get('TresPerTask')}, CUDA_VISIBLE_DEVICES of the tasks {gpus}) "
              f"in {time.time() - t:.1f} s")
        if st != "COMPLETED":
            print(o5[-3000:])

        # A bad launcher name: one clear line, exit 2 (the script's own check).
        out4 = os.path.join(tmp, "job4.out")
        j4 = submit(cl, out4, [*small, "--steps", "1"], {"ZT_LAUNCHER": "pbs"})
        st = wait_done(cl, j4, 60)
        check(st == "FAILED" and cl.job(j4).get("ExitCode") == "2:0"
              and "ZT_LAUNCHER must be auto, srun or mpirun, got 'pbs'" in text(out4),
              f"ZT_LAUNCHER=pbs: the job fails with exit 2 and says why ({st})")
    except Exception as e:  # noqa: BLE001 (report, dump the daemons' logs, tear down)
        check(False, f"{type(e).__name__}: {e}")
        cl.dump_logs()
    finally:
        t = time.time()
        cl.stop()
        print(f"cluster stopped in {time.time() - t:.1f} s", flush=True)
        if not check.failures:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp} for inspection")
    print(f"total {time.time() - T0:.1f} s")
    check.finish()


if __name__ == "__main__":
    # ctest's timeout or Ctrl-C: turn SIGTERM/SIGINT into an exception so `finally` tears down.
    def _interrupt(sig, _frame):
        raise KeyboardInterrupt(f"signal {sig}")
    signal.signal(signal.SIGTERM, _interrupt)
    main()

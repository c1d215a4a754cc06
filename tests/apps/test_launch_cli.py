#!/usr/bin/env python3
"""tests/apps/test_launch_cli.py: `zerotrain launch` as a user runs it.

Trains 2 real ranks from a hostfile `localhost slots=2`; checks what every rank finds in its
environment (.deepspeed_env, ZT_ENV_FILE/DS_ENV_FILE, $HOME, NCCL_/UCX_ variables,
CUDA_VISIBLE_DEVICES, MASTER_ADDR/PORT); checks the --dry-run command for a 2-host hostfile with
--include, and lets the real mpirun map it (--do-not-launch --display-map: ranks 0-1 on worker-0,
2-5 on worker-1); the CPU layout without a hostfile (one rank per NUMA node); and that every bad
input exits 2 with one line naming the file, line, host or slot.
Usage: test_launch_cli.py ZEROTRAIN SRC_DIR
"""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

ZT, SRC = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
TINY = os.path.join(SRC, "configs", "tiny.yaml")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cli_util import Checks  # noqa: E402

check = Checks()


# A clean environment: no CUDA_VISIBLE_DEVICES, no .deepspeed_env from the user's $HOME.
BASE_ENV = {k: v for k, v in os.environ.items()
            if not k.startswith(("NCCL_", "UCX_", "UCC_", "FI_", "CUDA_", "ZT_", "DS_ENV", "OMPI_", "OMP_"))}
BASE_ENV.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1")


def launch(*args, cwd, env=None, timeout=240):
    e = dict(BASE_ENV, **(env or {}))
    return subprocess.run([ZT, "launch", *args], capture_output=True, encoding="utf-8", errors="replace",
                          cwd=cwd, env=e, timeout=timeout)


def has_gpus():
    if shutil.which("nvidia-smi"):
        r = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
        if any(l.startswith("GPU ") for l in r.stdout.splitlines()):
            return True
    return any(re.fullmatch(r"nvidia\d+", n) for n in os.listdir("/dev"))


with tempfile.TemporaryDirectory() as tmp:
    home = os.path.join(tmp, "home")
    work = os.path.join(tmp, "work")
    os.makedirs(home)
    os.makedirs(work)
    BASE_ENV["HOME"] = home
    hf = os.path.join(tmp, "hostfile")
    open(hf, "w").write("# this machine, two ranks\nlocalhost slots=2\n")
    small = ["--set", "model.n_layer=2", "--set", "model.n_embd=64", "--set", "model.seq_len=64",
             "--set", "training.eval_interval=0", "--set", "train_micro_batch_size_per_gpu=4", "--sample", "0"]

    # 1. Two real ranks from the hostfile.
    log = os.path.join(tmp, "log.jsonl")
    r = launch("--hostfile", hf, "--", "train", "--config", TINY, "--steps", "6", "--json-log", log, *small,
               "--set", "zero_optimization.stage=2", cwd=work)
    check(r.returncode == 0, f"launch --hostfile (localhost slots=2) -- train exits 0 ({r.stderr.strip()[-300:]})")
    lines = r.stdout.splitlines()
    check(lines[0] == "# zerotrain launch: 2 rank(s), GPU slots localhost:0,1", f"summary line ({lines[0]!r})")
    check(lines[1].startswith("mpirun ") and f"-np 2 -H localhost:2 -x CUDA_VISIBLE_DEVICES=0,1" in lines[1]
          and f"{ZT} train --config {TINY}" in lines[1], "it prints the mpirun command it runs")
    summ = [json.loads(l) for l in open(log)][-1] if os.path.exists(log) else {}
    check(summ.get("ranks") == 2 and summ.get("stage") == 2 and summ.get("steps") == 6,
          f"the job trained on 2 ranks at stage 2 ({summ.get('ranks')} ranks)")
    check("ranks 2 on 1 node(s)" in r.stdout, "the start block says 2 ranks")

    # 2. What every rank finds in its environment.
    open(os.path.join(work, ".deepspeed_env"), "w").write("# for every rank\nFOO=bar baz\nNCCL_SOCKET_IFNAME=lo\n")
    show = "echo rank=$OMPI_COMM_WORLD_RANK cvd=$CUDA_VISIBLE_DEVICES foo=$FOO ifname=$NCCL_SOCKET_IFNAME " \
           "debug=$NCCL_DEBUG ucx=$UCX_TLS master=$MASTER_ADDR:$MASTER_PORT"
    r = launch("--hostfile", hf, "--master_port", "29612", "--", "sh", "-c", show, cwd=work,
               env={"NCCL_DEBUG": "WARN", "UCX_TLS": "tcp", "NCCL_SOCKET_IFNAME": "eth9"})
    got = sorted(l for l in r.stdout.splitlines() if l.startswith("rank="))
    want = [f"rank={i} cvd=0,1 foo=bar baz ifname=lo debug=WARN ucx=tcp master=localhost:29612" for i in (0, 1)]
    check(r.returncode == 0 and got == want, f"each rank gets .deepspeed_env (over the environment), NCCL_/UCX_ "
          f"variables, CUDA_VISIBLE_DEVICES and MASTER_*: {got}")
    cmd = r.stdout.splitlines()[1] if r.returncode == 0 else ""
    check("-x 'FOO=bar baz' -x NCCL_SOCKET_IFNAME=lo" in cmd and "-x NCCL_DEBUG" in cmd and "-x UCX_TLS" in cmd
          and "-x NCCL_SOCKET_IFNAME " not in cmd,
          "the command passes file values as -x NAME=VALUE and environment names as -x NAME")
    # The same file from $HOME when the current folder has none; DS_ENV_FILE and ZT_ENV_FILE name others.
    os.rename(os.path.join(work, ".deepspeed_env"), os.path.join(home, ".deepspeed_env"))
    r = launch("--hostfile", hf, "--dry-run", "--", "train", cwd=work)
    check(r.returncode == 0 and "-x 'FOO=bar baz'" in r.stdout, "~/.deepspeed_env is read when ./ has none")
    open(os.path.join(work, "ds.env"), "w").write("BAR=1\n")
    open(os.path.join(tmp, "zt.env"), "w").write("BAZ=2\n")
    r = launch("--hostfile", hf, "--dry-run", "--", "train", cwd=work, env={"DS_ENV_FILE": "ds.env"})
    check("-x BAR=1" in r.stdout and "FOO" not in r.stdout, "DS_ENV_FILE names the file instead")
    r = launch("--hostfile", hf, "--dry-run", "--", "train", cwd=work,
               env={"DS_ENV_FILE": "ds.env", "ZT_ENV_FILE": os.path.join(tmp, "zt.env")})
    check("-x BAZ=2" in r.stdout and "BAR" not in r.stdout, "ZT_ENV_FILE (a path) comes before DS_ENV_FILE")
    os.remove(os.path.join(home, ".deepspeed_env"))

    # 3. Two hosts, --include: one app context per host with its own devices, in hostfile order.
    hf2 = os.path.join(tmp, "hostfile2")
    open(hf2, "w").write("worker-0 slots=4\nworker-1 slots=4\n")
    r = launch("--hostfile", hf2, "--include", "worker-1@worker-0:0,2", "--dry-run", "--", "train", "--config",
               "c.yaml", cwd=tmp, env={"NCCL_DEBUG": "INFO"})
    cmdline = r.stdout.splitlines()[1] if r.returncode == 0 else ""
    want = ("-np 2 -H worker-0:2 -x CUDA_VISIBLE_DEVICES=0,2 -x MASTER_ADDR=worker-0 -x MASTER_PORT=29500 "
            f"-x NCCL_DEBUG -x OMPI_ALLOW_RUN_AS_ROOT -x OMPI_ALLOW_RUN_AS_ROOT_CONFIRM -x OMP_NUM_THREADS "
            f"{ZT} train --config c.yaml : "
            "-np 4 -H worker-1:4 -x CUDA_VISIBLE_DEVICES=0,1,2,3 -x MASTER_ADDR=worker-0 -x MASTER_PORT=29500 "
            f"-x NCCL_DEBUG -x OMPI_ALLOW_RUN_AS_ROOT -x OMPI_ALLOW_RUN_AS_ROOT_CONFIRM -x OMP_NUM_THREADS "
            f"{ZT} train --config c.yaml")
    check(r.returncode == 0 and cmdline.endswith(want), f"--dry-run prints one context per host: {cmdline}")
    check(r.stdout.splitlines()[0] == "# zerotrain launch: 6 rank(s), GPU slots worker-0:0,2, worker-1:0,1,2,3",
          "the summary lists each host's slots")
    r = launch("--hostfile", hf2, "--exclude", "worker-0:1@worker-1:0,1,2", "--master_addr", "10.0.0.1",
               "--launcher_args", "--mca btl ^openib", "--dry-run", "--", "train", cwd=tmp)
    check(r.returncode == 0 and " --mca btl '^openib' -np 3 -H worker-0:3 -x CUDA_VISIBLE_DEVICES=0,2,3 " in r.stdout
          and "-np 1 -H worker-1:1 -x CUDA_VISIBLE_DEVICES=3 " in r.stdout and "MASTER_ADDR=10.0.0.1" in r.stdout,
          "--exclude, --master_addr and --launcher_args")
    r = launch("--hostfile", hf2, "--num_nodes", "1", "--num_gpus", "3", "--dry-run", "--", "train", cwd=tmp)
    check(r.returncode == 0 and "-np 3 -H worker-0:3 -x CUDA_VISIBLE_DEVICES=0,1,2 " in r.stdout
          and "worker-1" not in r.stdout, "--num_nodes 1 --num_gpus 3")
    # The real mpirun maps that command: ranks 0-1 on worker-0 (app 0), 2-5 on worker-1 (app 1).
    r = launch("--hostfile", hf2, "--include", "worker-0:0,2@worker-1", "--launcher_args",
               "--do-not-launch --display-map", "--", "true", cwd=tmp, timeout=60)
    placed = re.findall(r"App: (\d) Process rank: (\d)", r.stdout)
    nodes = re.findall(r"Data for node: (\S+)\s+Num slots: (\d+).*?Num procs: (\d+)", r.stdout)
    check(r.returncode == 0 and placed == [("0", "0"), ("0", "1"), ("1", "2"), ("1", "3"), ("1", "4"), ("1", "5")]
          and nodes == [("worker-0", "2", "2"), ("worker-1", "4", "4")],
          f"mpirun maps ranks 0-1 to worker-0 and 2-5 to worker-1 ({placed}, {nodes})")

    # 4. No hostfile, no GPU: one rank per NUMA node, bound to it.
    if has_gpus():
        print("skip the CPU layout checks: this machine has GPUs")
    else:
        numa = max(1, len([n for n in os.listdir("/sys/devices/system/node") if re.fullmatch(r"node\d+", n)])
                   if os.path.isdir("/sys/devices/system/node") else 1)
        r = launch("--", "train", "--config", TINY, "--steps", "3", *small, cwd=tmp)
        check(r.returncode == 0 and f"# zerotrain launch: {numa} rank(s), one per NUMA node (no GPU found)" in r.stdout
              and f"--map-by numa --bind-to numa -np {numa} -H localhost:{numa} " in r.stdout
              and "CUDA_VISIBLE_DEVICES" not in r.stdout and f"ranks {numa} on 1 node(s)" in r.stdout,
              f"CPU layout: {numa} rank(s), one per NUMA node, trains ({r.stderr.strip()[-200:]})")
        r = launch("--num_gpus", "1", "--", "train", cwd=tmp)
        check(r.returncode == 2 and "--num_gpus 1: no GPU on this machine" in r.stderr, "--num_gpus without GPUs")

    # 5. Bad input: exit 2, one line, naming what and where.
    bad = os.path.join(tmp, "bad_hostfile")
    open(bad, "w").write("worker-0 slots=2\nworker-1 slot=2\n")
    bad_env = os.path.join(tmp, "bad.env")
    open(bad_env, "w").write("A=1\nexport B\n")
    cases = [
        (["--hostfile", bad, "--", "train"], {}, f"{bad}:2: expected `slots=N` after the host name, got `slot=2`"),
        (["--hostfile", os.path.join(tmp, "nope"), "--", "train"], {}, os.path.join(tmp, "nope")),
        (["--hostfile", hf2, "--include", "worker-7", "--", "train"], {}, "host `worker-7` is not in the host list"),
        (["--hostfile", hf2, "--include", "worker-0:9", "--", "train"], {}, "host `worker-0` has no slot 9"),
        (["--hostfile", hf2, "--include", "worker-0", "--exclude", "worker-1", "--", "train"], {},
         "--include and --exclude exclude each other"),
        (["--hostfile", hf2, "--include", "worker-0", "--num_gpus", "1", "--", "train"], {},
         "--num_nodes/--num_gpus and --include/--exclude exclude each other"),
        (["--hostfile", hf2, "--num_gpus", "5", "--", "train"], {}, "--num_gpus 5: host `worker-0` has only 4 slot(s)"),
        (["--hostfile", hf2, "--master_port", "70000", "--", "train"], {}, "--master_port 70000: not a port"),
        (["--hostfile", hf, "--", "train"], {"ZT_ENV_FILE": bad_env}, f"{bad_env}:2: expected NAME=VALUE"),
        (["--hostfile", hf, "--", "train"], {"ZT_ENV_FILE": "missing.env"}, "ZT_ENV_FILE=missing.env: no such file"),
        (["--hostfile", hf, "--launcher_args", "'x", "--", "train"], {}, "--launcher_args: unmatched '"),
        (["--hostfile", hf], {}, "give the command after `--`"),
        (["--hostfile", hf, "--", "launch", "--", "train"], {}, "would launch a launcher"),
    ]
    for args, env, needle in cases:
        r = launch(*args, cwd=tmp, env=env, timeout=60)
        err = r.stderr.strip()
        check(r.returncode == 2 and needle in err and len(err.splitlines()) == 1 and not r.stdout,
              f"{' '.join(shlex.quote(a) for a in args)}: exit 2, one line ({r.returncode}: {err[:200]})")
    r = launch("--hostfile", hf, "--", "train", cwd=tmp, env={"ZT_MPIRUN": "/nonexistent/mpirun"})
    check(r.returncode == 1 and "cannot run /nonexistent/mpirun" in r.stderr, f"a missing mpirun: exit 1 ({r.stderr.strip()})")
    # A rank's failure comes back as the launch's exit code (mpirun passes it on).
    r = launch("--hostfile", hf, "--", "train", "--config", os.path.join(tmp, "nope.yaml"), cwd=tmp)
    check(r.returncode == 2 and "nope.yaml" in r.stderr, f"a bad config under launch exits 2 ({r.returncode})")

check.finish()

#!/usr/bin/env python3
"""tests/apps/test_ckpt_tools.py: `zerotrain ckpt inspect`, `ckpt consolidate` and `generate`.

Trains a small byte-level GPT for a few steps with checkpoint.dir set: on 1 rank and on 2 ranks at
ZeRO stage 2 (same global batch), in f32 and in bf16, and on 3 ranks at stage 1 (uneven split). Consolidates every run and opens the file
with Hugging Face's `safetensors`: names, shapes and dtypes are those of the PyTorch GPT of
tests/core/gpt_vs_torch.py; the values equal an independent reassembly in Python from the
manifest's partition map and the shards, bit for bit (fp32 master when present, else params; bf16
and f16 output = torch's round-to-nearest-even of it); and the 2-rank stage 2 weights equal the
1-rank ones to float tolerance. The PyTorch GPT built from the consolidated tensors agrees with
`generate --temperature 0` (each greedy byte is torch's argmax, up to float noise). inspect lists
the tags and exits 0; after one byte of the latest shard is flipped it names the damaged tag and
the fallback and exits 2, and consolidate/generate fall back the same way. generate prints the
prompt plus N bytes, reproducibly for a seed, and refuses a model that is not byte-level.

Usage: test_ckpt_tools.py ZEROTRAIN SRC_DIR [MPIEXEC]
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import load_file as load_np
from safetensors.torch import load_file as load_torch

ZT, SRC = sys.argv[1], sys.argv[2]
MPIEXEC = sys.argv[3] if len(sys.argv) > 3 else "mpiexec"
TINY = os.path.join(SRC, "configs", "tiny.yaml")
sys.path.insert(0, os.path.join(SRC, "tests", "core"))
import gpt_vs_torch  # noqa: E402  (the PyTorch GPT: names, shapes, forward)

ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cli_util  # noqa: E402
from cli_util import Checks  # noqa: E402

check = Checks()


def run(*args, ranks=1, raw=False):  # raw: generate prints a byte-level model's raw bytes
    return cli_util.run(ZT, args, ranks=ranks, mpiexec=MPIEXEC, env=ENV, raw=raw)


SMALL = ["--config", TINY, "--steps", "6", "--sample", "0", "--set", "model.n_layer=2",
         "--set", "model.n_embd=64", "--set", "model.seq_len=64",
         "--set", "scheduler.params.total_num_steps=6", "--set", "scheduler.params.warmup_num_steps=2",
         "--set", "train_batch_size=8", "--set", "train_micro_batch_size_per_gpu=auto"]


def train(ckdir, ranks=1, stage=0, bf16=False, extra=()):
    args = ["train", *SMALL, "--set", f"checkpoint.dir={ckdir}", "--set", f"zero_optimization.stage={stage}",
            *(["--set", "bf16.enabled=true"] if bf16 else []), *extra]
    r = run(*args, ranks=ranks)
    check(r.returncode == 0, f"train ranks={ranks} stage={stage} bf16={bf16} exits 0 ({r.stderr.strip()[-300:]})")
    return r


def reassemble(ckdir, tag):
    """zero_to_fp32 in Python: the flat buffer from the manifest's partitions, cut into parameters."""
    m = json.load(open(os.path.join(ckdir, tag, "manifest.json")))
    numel = m["buffers"]["flat"]["numel"]
    pieces = []
    for p in m["partitions"]:
        for rg in p["ranges"]:
            if rg["end"] > rg["begin"]:
                pieces.append((rg["begin"], rg["end"], p["rank"]))
    flat, source = None, None
    for begin, end, rank in sorted(pieces):
        shard = load_torch(os.path.join(ckdir, tag, "rank%05d.safetensors" % rank))
        source = "master" if "master" in shard else "params"
        t = shard[source]
        assert t.numel() == end - begin, (tag, rank)
        if flat is None:
            flat = torch.empty(numel, dtype=torch.float32)
        flat[begin:end] = t.float()
    params = json.loads(m["metadata"]["parameters"])
    out = {p["name"]: flat[p["offset"]:p["offset"] + int(np.prod(p["shape"]))].reshape(p["shape"]) for p in params}
    return out, source, m


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item() if b.norm() > 0 else (a - b).norm().item()


def torch_gpt(cfg, tensors):
    hidden = tensors["blocks.0.mlp.fc.weight"].shape[0]
    model = gpt_vs_torch.GPT(cfg, hidden)
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(tensors[n].float())
    return model.eval()


with tempfile.TemporaryDirectory() as tmp:
    dA, dB, dC, dD = (os.path.join(tmp, n) for n in ("f32_np1", "f32_np2_s2", "bf16_np1", "bf16_np2_s2"))
    train(dA, extra=["--set", "checkpoint.interval=3"])  # tags global_step3 and global_step6
    rB = train(dB, ranks=2, stage=2)
    check("ranks 2" in rB.stdout and "ZeRO stage 2" in rB.stdout, "the 2-rank run is at stage 2")
    train(dC, bf16=True)
    train(dD, ranks=2, stage=2, bf16=True)
    # 3 ranks at stage 1: the flat buffer does not split evenly (padding, a short last range).
    dE = os.path.join(tmp, "f32_np3_s1")
    train(dE, ranks=3, stage=1, extra=["--set", "train_batch_size=6", "--set", "model.seq_len=60"])
    mE = json.load(open(os.path.join(dE, "global_step6", "manifest.json")))
    lens = [r["end"] - r["begin"] for p in mE["partitions"] for r in p["ranges"]]
    check(len(lens) == 3 and lens[0] == lens[1] > lens[2], f"3 ranks: the last range is the short one ({lens})")

    # ---- inspect: an intact folder ----------------------------------------------------------------
    r = run("ckpt", "inspect", dA)
    check(r.returncode == 0, f"inspect exits 0 on an intact folder ({r.stderr.strip()[:200]})")
    lines = r.stdout.splitlines()
    rows = [l for l in lines if "global_step" in l and not l.startswith(("checkpoints", "latest"))]
    check([l.split()[1] if l.startswith("*") else l.split()[0] for l in rows] == ["global_step6", "global_step3"],
          f"inspect lists the tags newest first: {rows}")
    check(rows and rows[0].startswith("*") and rows[0].rstrip().endswith("ok"), "the latest tag is marked and verifies")
    check(all(l.rstrip().endswith("ok") for l in rows), "every tag verifies")
    check("`latest` -> global_step6" in lines[0] and "a resume starts there" in r.stdout, "inspect names `latest`")
    r = run("ckpt", "inspect", dD)
    row = [l for l in r.stdout.splitlines() if l.startswith("*")]
    f = row[0].split() if row else []
    check(r.returncode == 0 and f[1:6] == ["global_step6", "6", "2", "2", "bf16"] and f[6] == "f32",
          f"inspect shows step 6, 2 ranks, stage 2, bf16 weights with an f32 master: {row}")

    # ---- consolidate: every run, checked against a Python reassembly ------------------------------
    names = None
    outs = {}
    for d in (dA, dB, dC, dD, dE):
        out = os.path.join(tmp, os.path.basename(d) + ".safetensors")
        r = run("ckpt", "consolidate", d, "--out", out)
        check(r.returncode == 0 and os.path.exists(out), f"consolidate {os.path.basename(d)} exits 0 ({r.stderr.strip()[:200]})")
        if r.returncode != 0:
            continue
        got = load_np(out)
        ref, source, m = reassemble(d, "global_step6")
        check(source == ("master" if d in (dC, dD) else "params"),
              f"{os.path.basename(d)}: the reference reads {source} (fp32 master only in mixed precision)")
        check(list(got) and all(v.dtype == np.float32 for v in got.values()), "f32 tensors")
        check(set(got) == set(ref), f"{os.path.basename(d)}: names = the manifest's parameters")
        check(all(tuple(got[n].shape) == tuple(ref[n].shape) and np.array_equal(got[n], ref[n].numpy())
                  for n in ref), f"{os.path.basename(d)}: values = reassembly from the shards, bit for bit")
        with safe_open(out, "np") as fh:
            md = fh.metadata()
        model = json.loads(md.get("model", "{}"))
        check(md.get("tag") == "global_step6" and md.get("global_step") == "6" and model.get("n_layer") == 2
              and model.get("n_embd") == 64 and model.get("vocab_size") == 256 and md.get("format") == "pt",
              f"__metadata__ has the model sizes, tag and step: {md}")
        outs[d] = got
        names = names or (model, got)

    # Names and shapes are those of the PyTorch GPT (tied head: no lm_head.weight).
    if names:
        cfg, got = names
        tm = gpt_vs_torch.GPT(cfg, got["blocks.0.mlp.fc.weight"].shape[0])
        want = {n: tuple(p.shape) for n, p in tm.named_parameters()}
        check({n: tuple(v.shape) for n, v in got.items()} == want,
              f"names and shapes = torch GPT's named_parameters ({len(want)} tensors, e.g. blocks.0.attn.qkv.weight)")

    # 2 ranks at stage 2 = 1 rank, to float tolerance (the same global batch; only the order of the
    # gradient sums differs). One exception: the key part of attn.qkv.bias. Softmax is invariant to
    # adding the same number to every score, so its exact gradient is zero; what it gets is rounding
    # noise, which Adam normalizes into lr-sized steps of random sign. Both runs leave it near its
    # initial 0 (about 1e-6 after 6 steps) but not equal to each other: it is checked for being
    # tiny, and the rest of the tensor for 1e-5.
    def parts(t, name):
        if not name.endswith("attn.qkv.bias"):
            return {name: t}, None
        C = t.shape[0] // 3
        return {name + "[q]": t[:C], name + "[v]": t[2 * C:]}, t[C:2 * C]

    # bf16 runs round the weights to 8 bits after every step: a master value a hair away on one run
    # can round to the neighbouring bf16 weight, and the next steps see that (2^-8 relative), so
    # the fp32 masters of bf16 runs agree to a few 1e-4, not 1e-5 (measured 0.6-1.03e-4 as the
    # repository text the tiny config trains on changes).
    for a, b, what, tol in ((dB, dA, "f32", 1e-5), (dD, dC, "bf16 (fp32 master)", 3e-4)):
        if a in outs and b in outs:
            errs, kbias = {}, 0.0
            for n in outs[b]:
                pa, ka = parts(torch.from_numpy(outs[a][n]), n)
                pb, kb = parts(torch.from_numpy(outs[b][n]), n)
                errs.update({k: rel(pa[k], pb[k]) for k in pb})
                if ka is not None:
                    kbias = max(kbias, ka.abs().max().item(), kb.abs().max().item())
            worst = max(errs, key=errs.get)
            check(errs[worst] <= tol, f"{what}: 2 ranks stage 2 weights = 1 rank's "
                  f"(worst relative error {errs[worst]:.2e}, {worst}; {len(errs)} tensors)")
            check(kbias <= 1e-4, f"{what}: the key bias (zero gradient) stays at rounding noise in both ({kbias:.1e})")

    # bf16 / f16 output: torch's round-to-nearest-even of the fp32 weights, bit for bit; for a bf16
    # run that is also exactly the model's own bf16 weights (the shards' "params").
    ref32, _, _ = reassemble(dD, "global_step6")
    for dt, tdt in (("bf16", torch.bfloat16), ("f16", torch.float16)):
        out = os.path.join(tmp, f"d_{dt}.safetensors")
        r = run("ckpt", "consolidate", dD, "--out", out, "--dtype", dt)
        check(r.returncode == 0, f"consolidate --dtype {dt} exits 0 ({r.stderr.strip()[:200]})")
        if r.returncode != 0:
            continue
        got = load_torch(out)
        check(all(v.dtype == tdt for v in got.values()), f"--dtype {dt}: every tensor is {tdt}")
        check(all(torch.equal(got[n], ref32[n].to(tdt)) for n in ref32), f"--dtype {dt}: values = RNE of the fp32 master")
    m = json.load(open(os.path.join(dD, "global_step6", "manifest.json")))
    params16 = torch.cat([load_torch(os.path.join(dD, "global_step6", "rank%05d.safetensors" % p["rank"]))["params"]
                          for p in m["partitions"]])
    bf = load_torch(os.path.join(tmp, "d_bf16.safetensors")) if os.path.exists(os.path.join(tmp, "d_bf16.safetensors")) else {}
    flat16 = torch.empty_like(params16)
    for p in json.loads(m["metadata"]["parameters"]):
        if p["name"] in bf:
            flat16[p["offset"]:p["offset"] + bf[p["name"]].numel()] = bf[p["name"]].flatten()
    check(params16.dtype == torch.bfloat16 and bf and torch.equal(flat16, params16),
          "bf16 output = the model's bf16 weights in the shards, bit for bit")
    r = run("ckpt", "consolidate", dA, "--out", os.path.join(tmp, "x.safetensors"), "--dtype", "f64")
    check(r.returncode == 2 and "--dtype" in r.stderr, f"--dtype f64 is refused with exit 2: {r.stderr.strip()[:200]}")
    r = run("ckpt", "consolidate", dA, "--tag", "global_step3", "--out", os.path.join(tmp, "s3.safetensors"))
    s3 = load_np(os.path.join(tmp, "s3.safetensors")) if r.returncode == 0 else {}
    check(r.returncode == 0 and s3 and not np.array_equal(s3["wte.weight"], outs[dA]["wte.weight"])
          and np.array_equal(s3["wte.weight"], reassemble(dA, "global_step3")[0]["wte.weight"].numpy()),
          "--tag global_step3 reads that tag")
    r = run("ckpt", "consolidate", dA, "--tag", "global_step99", "--out", os.path.join(tmp, "y.safetensors"))
    check(r.returncode == 2 and "global_step99" in r.stderr, f"a missing tag exits 2 naming it: {r.stderr.strip()[:200]}")

    # ---- generate --------------------------------------------------------------------------------
    prompt = b"int main("
    g = lambda *a, d=dA: run("generate", "--checkpoint", d, "--prompt", prompt.decode(), *a, raw=True)
    r1, r2, r3 = g("--bytes", "40", "--seed", "7"), g("--bytes", "40", "--seed", "7"), g("--bytes", "40", "--seed", "8")
    check(r1.returncode == 0, f"generate exits 0 ({r1.stderr.decode(errors='replace').strip()[:200]})")
    check(r1.stdout.startswith(prompt) and len(r1.stdout) == len(prompt) + 40 + 1 and r1.stdout.endswith(b"\n"),
          f"generate prints the prompt + 40 bytes + a newline ({len(r1.stdout)} bytes)")
    check(r1.stdout == r2.stdout, "the same seed gives the same bytes")
    check(r1.stdout != r3.stdout, "another seed gives other bytes")
    r = g("--bytes", "40", "--seed", "7", d=dD)
    check(r.returncode == 0 and r.stdout.startswith(prompt), "generate reads a 2-rank stage 2 bf16 checkpoint")

    # Greedy bytes agree with the PyTorch GPT on the consolidated weights: each generated byte is
    # torch's argmax at its position (up to float noise between near-equal logits).
    r = g("--bytes", "24", "--temperature", "0")
    if r.returncode == 0 and dA in outs:
        cfg = json.loads(safe_open(os.path.join(tmp, "f32_np1.safetensors"), "np").metadata()["model"])
        tm = torch_gpt(cfg, {n: torch.from_numpy(v) for n, v in outs[dA].items()})
        seq = list(r.stdout[:-1])
        ids = torch.tensor([seq[:-1]], dtype=torch.int64)
        with torch.no_grad():
            _, logits = tm(ids, torch.full_like(ids, -1))
        ok = True
        for pos in range(len(prompt) - 1, len(seq) - 1):
            row, chosen = logits[pos], seq[pos + 1]
            ok &= bool(row.max() - row[chosen] <= 1e-4 * max(1.0, row.abs().max().item()))
        check(ok, "greedy generate = argmax of the PyTorch GPT built from the consolidated tensors")
    else:
        check(False, f"generate --temperature 0 exits 0 ({r.stderr.decode(errors='replace')[:200]})")

    # A model that is not byte-level is refused clearly.
    dV = os.path.join(tmp, "vocab300")
    r = run("train", *SMALL[:2], "--steps", "1", "--sample", "0", "--set", "model.n_layer=1", "--set", "model.n_embd=32",
            "--set", "model.vocab_size=300", "--set", f"checkpoint.dir={dV}")
    r = run("generate", "--checkpoint", dV, "--prompt", "x", "--bytes", "4")
    check(r.returncode == 2 and "256" in r.stderr and "300" in r.stderr, f"vocab 300 is refused with exit 2: {r.stderr.strip()[:200]}")

    # ---- a damaged latest: inspect names it and the fallback; the tools fall back ----------------
    dX = os.path.join(tmp, "damaged")
    shutil.copytree(dA, dX)
    shard = os.path.join(dX, "global_step6", "rank00000.safetensors")
    with open(shard, "r+b") as fh:
        fh.seek(os.path.getsize(shard) // 2)
        b = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([b[0] ^ 0x40]))
    r = run("ckpt", "inspect", dX)
    check(r.returncode == 2, f"inspect exits 2 when `latest` is damaged (got {r.returncode})")
    row6 = [l for l in r.stdout.splitlines() if "global_step6" in l and l.startswith("*")]
    row3 = [l for l in r.stdout.splitlines() if "global_step3" in l and not l.startswith(("latest", "checkpoints"))]
    check(row6 and "DAMAGED" in row6[0] and row3 and row3[0].rstrip().endswith("ok"),
          f"inspect marks global_step6 DAMAGED and global_step3 ok:\n{r.stdout}")
    check("rank00000.safetensors: checksum" in r.stdout, "inspect says which file and why")
    check("fall back to global_step3" in r.stdout and "global_step3" in r.stderr, "inspect names the fallback")
    r = run("ckpt", "inspect", "--no-checksums", dX)
    check(r.returncode == 0, "inspect --no-checksums: sizes alone cannot see a flipped byte (exit 0)")
    out = os.path.join(tmp, "fallback.safetensors")
    r = run("ckpt", "consolidate", dX, "--out", out)
    check(r.returncode == 0 and "falling back to 'global_step3'" in r.stderr and "global_step3" in r.stdout,
          f"consolidate falls back to global_step3 with a note ({r.stderr.strip()[:200]})")
    r = run("ckpt", "consolidate", dX, "--tag", "global_step6", "--out", out)
    check(r.returncode == 2 and "rank00000.safetensors" in r.stderr and "corrupt" in r.stderr,
          f"consolidate --tag global_step6 refuses the damaged tag with exit 2: {r.stderr.strip()[:200]}")
    r = run("generate", "--checkpoint", dX, "--prompt", "a", "--bytes", "4", raw=True)
    check(r.returncode == 0 and b"falling back" in r.stderr, "generate falls back too")
    shard3 = os.path.join(dX, "global_step3", "rank00000.safetensors")
    with open(shard3, "r+b") as fh:
        fh.truncate(os.path.getsize(shard3) - 8)
    r = run("ckpt", "inspect", dX)
    check(r.returncode == 2 and "no intact checkpoint" in r.stdout and "truncated" in r.stdout,
          f"both damaged: exit 2, nothing to fall back to:\n{r.stdout}")
    os.remove(os.path.join(dA, "latest"))
    r = run("ckpt", "inspect", dA)
    check(r.returncode == 2 and "no `latest`" in r.stdout and "fall back to global_step6" in r.stdout,
          "no `latest` file: exit 2, a resume would take the newest intact tag")
    r = run("ckpt", "inspect", os.path.join(tmp, "nowhere"))
    check(r.returncode == 2 and "nowhere" in r.stderr, "a missing folder exits 2 naming it")

check.finish()

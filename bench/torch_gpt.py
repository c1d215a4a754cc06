#!/usr/bin/env python3
"""bench/torch_gpt.py: the PyTorch side of zerotrain's CPU and GPU comparisons.

The same GPT as core/nn/gpt.h (pre-LayerNorm blocks, fused qkv, GELU tanh, learned positions, tied
head), timed the way zerotrain is timed: median over iterations of forward+backward, and of
forward+backward+AdamW step. Prints one JSON line.

CPU (default): f32 with a fixed thread count. Run with Debian's /usr/bin/python3 (python3-torch) and
libopenblas0-pthread installed: without OpenBLAS, Debian's torch uses the reference BLAS and is ~50x
slower.

GPU (--device cuda, bench/gpu_bench.sh): what a PyTorch user would run, nanoGPT's way: --dtype bf16
is autocast to bfloat16 over f32 weights, attention is F.scaled_dot_product_attention (flash) unless
--attention manual, AdamW is fused, --compile wraps the model in torch.compile. Every iteration ends
with torch.cuda.synchronize(); peak_mem_bytes is torch.cuda.max_memory_allocated() of the run.
"""
import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, C, H, sdpa=False):
        super().__init__()
        self.H = H
        self.sdpa = sdpa
        self.ln1 = nn.LayerNorm(C)
        self.qkv = nn.Linear(C, 3 * C)
        self.attn_proj = nn.Linear(C, C)
        self.ln2 = nn.LayerNorm(C)
        self.fc = nn.Linear(C, 4 * C)
        self.mlp_proj = nn.Linear(4 * C, C)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q = q.view(B, T, self.H, C // self.H).transpose(1, 2)
        k = k.view(B, T, self.H, C // self.H).transpose(1, 2)
        v = v.view(B, T, self.H, C // self.H).transpose(1, 2)
        if self.sdpa:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
            mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            y = att.masked_fill(~mask, float("-inf")).softmax(dim=-1) @ v
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        x = x + self.attn_proj(y)
        return x + self.mlp_proj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, L, C, H, T, V, sdpa=False):
        super().__init__()
        self.wte = nn.Embedding(V, C)
        self.wpe = nn.Embedding(T, C)
        self.blocks = nn.ModuleList([Block(C, H, sdpa) for _ in range(L)])
        self.ln_f = nn.LayerNorm(C)

    def forward(self, idx, targets):
        T = idx.size(1)
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for b in self.blocks:
            x = b(x)
        logits = self.ln_f(x) @ self.wte.weight.t()
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def blas_library():
    """Which BLAS the process really loaded (Debian's torch links the generic libblas.so.3)."""
    with open("/proc/self/maps") as f:
        maps = f.read()
    for name in ("openblas", "mkl", "blis", "atlas"):
        if name in maps:
            return name
    return "reference (slow: install libopenblas0-pthread)"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="f32", choices=["f32", "bf16"],
                    help="bf16: autocast to bfloat16 (weights and AdamW stay f32)")
    ap.add_argument("--attention", default="auto", choices=["auto", "sdpa", "manual"],
                    help="auto: sdpa on cuda, the explicit softmax (zerotrain's math) on cpu")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    ap.add_argument("--tag", default="", help="copied into the JSON line")
    a = ap.parse_args()
    cuda = a.device == "cuda"
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = False  # f32 runs as true f32, as zerotrain's
        torch.backends.cudnn.allow_tf32 = False
    sdpa = a.attention == "sdpa" or (a.attention == "auto" and cuda)
    model = GPT(a.layers, a.width, a.heads, a.seq, a.vocab, sdpa).to(a.device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1,
                            **({"fused": True} if cuda else {}))
    fwd = torch.compile(model) if a.compile else model
    idx = torch.randint(0, a.vocab, (a.batch, a.seq), device=a.device)
    tgt = torch.randint(0, a.vocab, (a.batch, a.seq), device=a.device)
    amp = torch.autocast("cuda" if cuda else "cpu", dtype=torch.bfloat16, enabled=a.dtype == "bf16")

    def timed(with_step):
        ts = []
        for i in range(a.iters + a.warmup):
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            with amp:
                loss = fwd(idx, tgt)
            loss.backward()
            if with_step:
                opt.step()
            opt.zero_grad(set_to_none=True)
            if cuda:
                torch.cuda.synchronize()
            if i >= a.warmup:
                ts.append(time.perf_counter() - t0)
        ts.sort()
        return ts[len(ts) // 2], float(loss)

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    fb, _ = timed(False)
    st, last_loss = timed(True)
    tokens = a.batch * a.seq
    out = {
        "bench": "torch_gpt", "torch": torch.__version__, "device": a.device, "dtype": a.dtype,
        "compile": a.compile, "attention": "sdpa" if sdpa else "manual",
        "layers": a.layers, "width": a.width, "heads": a.heads, "seq": a.seq, "vocab": a.vocab,
        "batch": a.batch, "iters": a.iters,
        "params": sum(p.numel() for p in model.parameters()),
        "fwd_bwd_ms": round(fb * 1e3, 2), "step_ms": round(st * 1e3, 2),
        "tokens_per_s": round(tokens / st), "last_loss": round(last_loss, 4)}
    if cuda:
        out["gpu"] = torch.cuda.get_device_name()
        out["peak_mem_bytes"] = torch.cuda.max_memory_allocated()
    else:
        out["threads"] = a.threads
        out["blas"] = blas_library()
    if a.tag:
        out["tag"] = a.tag
    print(json.dumps(out))


if __name__ == "__main__":
    main()

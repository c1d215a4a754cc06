#!/usr/bin/env bash
# bench/gpu_bench.sh: zerotrain against PyTorch on one GPU, same shapes, same run (issue #5).
#
#   bash bench/gpu_bench.sh BUILD_DIR OUT_DIR [BUDGET_S=300]
#
# Builds nothing: BUILD_DIR must hold apps/zerotrain (a -DZT_CUDA=ON build; bench/gpu_session.sh
# makes one). Two models, each trained by zerotrain for a fixed number of steps and timed by
# bench/torch_gpt.py (eager, then torch.compile) with the same shapes:
#   gpt2-124m  configs/gpt2-124m-cuda.yaml: 12 layers, 768 wide, 12 heads, T=1024, batch 16,
#              vocabulary 50304, bf16, AdamW
#   gpt-10m    configs/gpt-10m-cuda.yaml: 6 layers, 384 wide, 6 heads, T=256, batch 64,
#              vocabulary 256, bf16, AdamW
# For each: ms/step (zerotrain: median of the steps after the first WARMUP; PyTorch: median of its
# timed iterations after 3 untimed), tokens/s, peak GPU memory (zerotrain: its caching allocator's
# high-water mark; PyTorch: max_memory_allocated), and the ratios torch_ms / zerotrain_ms (above 1:
# zerotrain is faster). Every result is one JSON line appended to OUT_DIR/gpu_bench.jsonl and
# printed; each run's own output goes to OUT_DIR/<name>.log.
#
# ZT_SET="key=value ..." adds --set overrides to both zerotrain runs (e.g. zero_optimization.stage=2;
# device=cpu with small shapes checks this script on a machine without a GPU).
#
# Every run is guarded by `timeout` (its own cap, and never past BUDGET_S seconds from the start), so
# one hang or one slow model cannot eat a device session; a run that fails or times out gives a JSON
# line with "error" and the bench goes on. Order: the cheap runs first, torch.compile last.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:?usage: gpu_bench.sh BUILD_DIR OUT_DIR [BUDGET_S]}
out=${2:?usage: gpu_bench.sh BUILD_DIR OUT_DIR [BUDGET_S]}
budget=${3:-300}
build=$(cd "$build" && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
zt=$build/apps/zerotrain
[[ -x $zt ]] || { echo "gpu_bench: no $zt: build with -DZT_CUDA=ON first" >&2; exit 2; }
py=${PYTHON:-python3}
jsonl=$out/gpu_bench.jsonl
t_start=$(date +%s)
commit=$(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo unknown)
WARMUP=3
zt_set=()
for kv in ${ZT_SET:-}; do zt_set+=(--set "$kv"); done

# left CAP: seconds this run may take (its cap, or what is left of the budget if less)
left() {
  local cap=$1 rest=$((budget - ($(date +%s) - t_start)))
  ((rest < cap)) && cap=$rest
  echo $((cap > 0 ? cap : 0))
}

emit() { echo "$1" | tee -a "$jsonl"; }

# zt_run NAME CONFIG STEPS CAP: zerotrain on the GPU; one JSON line.
zt_run() {
  local name=$1 cfg=$2 steps=$3 t
  t=$(left "$4")
  if ((t < 10)); then
    emit "{\"bench\":\"zerotrain_gpu\",\"model\":\"$name\",\"error\":\"no time left in the budget\"}"
    return
  fi
  local log=$out/zt_$name.jsonl
  rm -f "$log"
  (cd "$here" && timeout -k 5 "$t" "$zt" train -c "$cfg" --steps "$steps" --sample 0 \
     --json-log "$log" "${zt_set[@]}") > "$out/zt_$name.log" 2>&1
  local rc=$?
  "$py" - "$log" "$name" "$rc" "$WARMUP" "$commit" "$out/zt_$name.log" <<'PY' | tee -a "$jsonl"
import json, sys
log, name, rc, warmup, commit, text = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
rows = []
try:
    rows = [json.loads(l) for l in open(log) if l.strip()]
except OSError:
    pass
steps = [r for r in rows if "step_ms" in r]
summ = next((r for r in rows if r.get("event") == "summary"), {})
out = {"bench": "zerotrain_gpu", "model": name, "commit": commit, "rc": rc,
       "steps": len(steps)}
if rc != 0 or not steps:
    tail = open(text, errors="replace").read().strip().splitlines()[-3:]
    out["error"] = ("timed out" if rc in (124, 137) else f"exit {rc}") + ": " + " | ".join(tail)
timed = sorted(r["step_ms"] for r in steps[warmup:]) or sorted(r["step_ms"] for r in steps)
if timed:
    med = timed[len(timed) // 2]
    out["step_ms"] = round(med, 2)
    tok = steps[-1]["tokens_per_s"] * steps[-1]["step_ms"] / 1e3  # tokens per step
    out["tokens_per_s"] = round(tok / (med / 1e3))
    out["first_step_ms"] = round(steps[0]["step_ms"], 1)
    out["last_loss"] = round(steps[-1]["loss"], 4)
    if "time_ms" in steps[-1]:
        out["last_breakdown_ms"] = {k: round(v, 2) for k, v in steps[-1]["time_ms"].items()}
for k in ("device", "dtype", "params", "device_peak_bytes", "device_reserved_bytes"):
    if k in summ:
        out[k] = summ[k]
if "device_peak_bytes" in out:
    out["peak_mem_bytes"] = out["device_peak_bytes"]
print(json.dumps(out))
PY
}

# torch_run NAME MODE CAP ARGS...: bench/torch_gpt.py on the GPU (MODE eager or compile); one JSON
# line.
torch_run() {
  local name=$1 mode=$2 t
  t=$(left "$3")
  shift 3
  if ((t < 10)); then
    emit "{\"bench\":\"torch_gpt\",\"tag\":\"$name\",\"mode\":\"$mode\",\"error\":\"no time left in the budget\"}"
    return
  fi
  local flags=()
  [[ $mode == compile ]] && flags=(--compile)
  timeout -k 5 "$t" "$py" "$here/bench/torch_gpt.py" --device cuda --dtype bf16 --tag "$name" \
    "${flags[@]}" "$@" > "$out/torch_${name}_$mode.log" 2>&1
  local rc=$? line
  line=$(grep '^{' "$out/torch_${name}_$mode.log" | tail -1)
  if ((rc == 0)) && [[ -n $line ]]; then
    emit "$line"
  else
    emit "{\"bench\":\"torch_gpt\",\"tag\":\"$name\",\"mode\":\"$mode\",\"error\":\"exit $rc (timeout: 124): see torch_${name}_$mode.log\"}"
  fi
}

# Shapes (the configs' and the PyTorch baseline's).
small=(--layers 6 --width 384 --heads 6 --seq 256 --vocab 256 --batch 64)
gpt2=(--layers 12 --width 768 --heads 12 --seq 1024 --vocab 50304 --batch 16)

echo "gpu_bench: commit $commit, budget ${budget}s, results in $jsonl"
nvidia-smi --query-gpu=name,memory.used,memory.total,utilization.gpu --format=csv,noheader 2>/dev/null || true
zt_run gpt-10m configs/gpt-10m-cuda.yaml 40 90
torch_run gpt-10m eager 60 "${small[@]}" --iters 30
zt_run gpt2-124m configs/gpt2-124m-cuda.yaml 15 150
torch_run gpt2-124m eager 60 "${gpt2[@]}" --iters 20
torch_run gpt-10m compile 90 "${small[@]}" --iters 30
torch_run gpt2-124m compile 120 "${gpt2[@]}" --iters 20

# One comparison line per model: the ratios (torch ms / zerotrain ms; > 1: zerotrain faster).
"$py" - "$jsonl" "$t_start" <<'PY' | tee -a "$jsonl"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rows = [r for r in rows if r.get("tag") or r.get("model")]
for model in ("gpt-10m", "gpt2-124m"):
    zt = [r for r in rows if r.get("bench") == "zerotrain_gpu" and r.get("model") == model]
    tor = [r for r in rows if r.get("bench") == "torch_gpt" and r.get("tag") == model]
    if not zt:
        continue
    z = zt[-1]
    out = {"bench": "gpu_vs_torch", "model": model, "zerotrain_step_ms": z.get("step_ms"),
           "zerotrain_tokens_per_s": z.get("tokens_per_s"),
           "zerotrain_peak_mem_bytes": z.get("peak_mem_bytes")}
    for mode, compiled in (("eager", False), ("compile", True)):
        t = [r for r in tor if r.get("compile") == compiled and "step_ms" in r]
        if not t:
            continue
        t = t[-1]
        out[f"torch_{mode}_step_ms"] = t["step_ms"]
        out[f"torch_{mode}_tokens_per_s"] = t["tokens_per_s"]
        out[f"torch_{mode}_peak_mem_bytes"] = t.get("peak_mem_bytes")
        if z.get("step_ms"):
            out[f"ratio_{mode}"] = round(t["step_ms"] / z["step_ms"], 3)
    print(json.dumps(out))
PY
echo "gpu_bench: done in $(( $(date +%s) - t_start ))s"

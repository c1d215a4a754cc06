#!/usr/bin/env bash
# tests/zero/cli_cuda.sh ZEROTRAIN SOURCE_DIR: `zerotrain train` with `device: cuda` end to end (ctest
# zero.cli_cuda, label gpu): a small configs/gpt-10m-cuda.yaml for 8 steps on one rank (the run
# summary names cuda:0; the JSON summary has the device and the allocator's peak; the loss is finite
# and falls), then 2 ranks sharing the GPU at ZeRO stage 2 (comm.backend auto must pick mpi: NCCL
# refuses two ranks on one GPU). Exit 77 (ctest SKIP_RETURN_CODE) when there is no GPU or the build
# has no CUDA, with zerotrain's own one-line reason.
set -uo pipefail
zt=$1
src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
small=(--set model.n_layer=2 --set train_micro_batch_size_per_gpu=8 --set steps_per_print=1
       --set scheduler.params.warmup_num_steps=1)
log=$("$zt" train -c "$src/configs/gpt-10m-cuda.yaml" --steps 8 --sample 0 "${small[@]}" \
        --json-log "$tmp/one.jsonl" 2>&1)
rc=$?
# shellcheck disable=SC2016  # the backquotes are zerotrain's, literally
if grep -q 'config key `device`: cuda, but' <<<"$log"; then
  echo "SKIP: $(grep 'config key' <<<"$log")"
  exit 77
fi
echo "$log"
((rc == 0)) || { echo "FAIL: zerotrain exited $rc"; exit 1; }
grep -q "device cuda:0" <<<"$log" || { echo "FAIL: no 'device cuda:0' in the run summary"; exit 1; }
python3 - "$tmp/one.jsonl" <<'PY' || exit 1
import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
steps = [r for r in rows if "loss" in r and "step" in r]
summ = next(r for r in rows if r.get("event") == "summary")
assert summ["device"] == "cuda:0", summ
assert summ.get("device_peak_bytes", 0) > 0, summ
assert all(math.isfinite(r["loss"]) for r in steps), steps
assert steps[-1]["loss"] < steps[0]["loss"], [r["loss"] for r in steps]
print("one rank: ok,", len(steps), "steps, loss", steps[0]["loss"], "->", steps[-1]["loss"])
PY
log=$(OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout 240 \
        mpiexec -n 2 --oversubscribe "$zt" train -c "$src/configs/gpt-10m-cuda.yaml" --steps 8 \
        --sample 0 "${small[@]}" --set zero_optimization.stage=2 2>&1)
rc=$?
echo "$log"
((rc == 0)) || { echo "FAIL: 2 ranks exited $rc"; exit 1; }
grep -q "backend   mpi" <<<"$log" || { echo "FAIL: 2 ranks on one GPU did not pick mpi"; exit 1; }
echo "two ranks: ok"

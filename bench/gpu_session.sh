#!/usr/bin/env bash
# bench/gpu_session.sh: everything one 10-minute call on the GPU machine does (issue #5), in the
# repository's root there, with .devdeps/ carried along (../shared/device/README.md):
#
#   source .devdeps/gpu-env.sh; cmake configure + build (-j16) into /tmp/b; ctest -L gpu;
#   bench/gpu_bench.sh /tmp/b $OUT/bench
#
#   run(command="bash bench/gpu_session.sh", carry=[".devdeps"], timeout_s=600)
#
# Each phase runs under `timeout`, with a budget that leaves the later phases their share, so a hang
# (a deadlocked MPI test, a kernel that never returns) costs its phase only. Logs land under $OUT
# (the device tool brings them back): configure.log, build.log, ctest.log, ctest_failed.txt,
# LastTest.log, bench/*.{log,jsonl}, summary.txt. The build stays in /tmp/b while the machine is warm:
# a second call with SKIP_BUILD=1 goes straight to the tests (or ONLY_BENCH=1 to the bench).
# Environment: BUILD (default /tmp/b), TOTAL_S (default 570: the call's 600 s less a margin),
# CTEST_REGEX (e.g. "EngineCuda|zero" to run a subset of the gpu label), BENCH_S (default 240).
#
# Reading the results, in dependency order (each layer needs the one before):
#   1. ctest.log: tests/gpu (CudaDevice, CudaAllocator, CudaOps, attention): the kernels vs the CPU;
#   2. comm (test_nccl, test_mpi_device): collectives on device buffers;
#   3. EngineCuda.GptLossAndGradientsMatchTheCpuF32: the whole model once (needs core/nn to put its
#      activations on the input's device), then the 20-step runs, EngineCudaMpi (2 ranks, mpi
#      staging), zero.cli_cuda (the trainer end to end);
#   4. bench/gpu_bench.jsonl: the gpu_vs_torch lines (ratio_eager, ratio_compile: > 1 = faster).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
out=${OUT:-/tmp/gpu_session_out}
mkdir -p "$out"
build=${BUILD:-/tmp/b}
total=${TOTAL_S:-570}
bench_s=${BENCH_S:-240}
t0=$(date +%s)
elapsed() { echo $(($(date +%s) - t0)); }
left() { echo $((total - $(elapsed))); }
note() { echo "[$(elapsed)s] $*" | tee -a "$out/summary.txt"; }

note "gpu_session: commit $(git rev-parse --short HEAD 2>/dev/null), build $build, out $out"
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
if [[ -f .devdeps/gpu-env.sh ]]; then
  # shellcheck disable=SC1091
  source .devdeps/gpu-env.sh
else
  note "no .devdeps/gpu-env.sh: carry .devdeps (bash ../shared/device/prepare.sh makes it)"
fi

if [[ -z ${SKIP_BUILD:-} && -z ${ONLY_BENCH:-} ]]; then
  # Configure + build get what the tests and the bench do not need (at least 60 s each kept).
  timeout -k 5 120 cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DZT_CUDA=ON \
    > "$out/configure.log" 2>&1
  rc=$?
  note "configure: exit $rc"
  ((rc == 0)) || { tail -30 "$out/configure.log"; exit 1; }
  b=$(( $(left) - bench_s - 90 ))
  ((b < 60)) && b=60
  timeout -k 5 "$b" cmake --build "$build" -j16 > "$out/build.log" 2>&1
  rc=$?
  note "build: exit $rc (limit ${b}s)"
  if ((rc != 0)); then
    grep -E "error|FAILED" "$out/build.log" | head -40
    # Whatever built can still be tested; zerotrain itself is what the bench needs.
  fi
fi

if [[ -z ${ONLY_BENCH:-} ]]; then
  c=$(( $(left) - bench_s ))
  ((c < 30)) && c=30
  # One GPU: the gpu label's tests run one at a time (RESOURCE_LOCK gpu) anyway.
  timeout -k 10 "$c" ctest --test-dir "$build" -L gpu --output-on-failure --timeout 240 \
    ${CTEST_REGEX:+-R "$CTEST_REGEX"} > "$out/ctest.log" 2>&1
  rc=$?
  note "ctest -L gpu: exit $rc (limit ${c}s): $(grep -E 'tests passed|tests failed' "$out/ctest.log" | tail -1)"
  grep -E "^\s+[0-9]+ - .*\((Failed|Timeout|Subprocess|SEGFAULT|Exception)" "$out/ctest.log" \
    > "$out/ctest_failed.txt" 2>/dev/null
  cp "$build/Testing/Temporary/LastTest.log" "$out/" 2>/dev/null
  head -40 "$out/ctest_failed.txt"
fi

bb=$(( $(left) - 5 ))
if ((bb >= 30)); then
  bash bench/gpu_bench.sh "$build" "$out/bench" "$bb" 2>&1 | tee "$out/bench.log" | grep -E '^\{|gpu_bench'
  note "bench: done"
else
  note "bench: skipped, ${bb}s left"
fi
note "gpu_session: done"

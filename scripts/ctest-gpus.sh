#!/usr/bin/env bash
# Spread the GPU suites (ctest label gpu) over the GPUs of this host, one suite per GPU at a
# time, through CTest's resource allocation.
#   scripts/ctest-gpus.sh [BUILD_DIR [N_GPUS]] [-- CTEST_ARGS...]
# N_GPUS: counted when not given, as the process sees them (CUDA_VISIBLE_DEVICES or
# HIP_VISIBLE_DEVICES when set, else nvidia-smi -L, else rocm-smi). Writes the resource spec
# BUILD_DIR/ctest-gpus.json (gpus 0..N-1, one slot each) and runs
#   ATTN_CTEST_GPUS=N ctest -L gpu --resource-spec-file BUILD_DIR/ctest-gpus.json -j N
# ATTN_CTEST_GPUS lifts RUN_SERIAL from the GPU tests (tests/gpu_spread/); each test finds its
# GPU in CTEST_RESOURCE_GROUP_0_GPUS (tests/gpu_main.h, tests/gpu_or_skip.sh). A plain
# `ctest -L gpu` still runs them one after another on the default device.
set -euo pipefail
build=build n=
[ $# -gt 0 ] && [ "$1" != -- ] && { build=$1; shift; }
[ $# -gt 0 ] && [ "$1" != -- ] && { n=$1; shift; }
[ $# -gt 0 ] && [ "$1" = -- ] && shift
[ -f "$build/CTestTestfile.cmake" ] || { echo "ctest-gpus: no ctest build in '$build' (make build)" >&2; exit 2; }

gpu_count() {
  local vis=${CUDA_VISIBLE_DEVICES:-${HIP_VISIBLE_DEVICES:-}}
  if [ -n "$vis" ]; then
    tr ',' '\n' <<<"$vis" | grep -c .
  elif command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    nvidia-smi -L | grep -c '^GPU '
  elif command -v rocm-smi >/dev/null && rocm-smi --showid >/dev/null 2>&1; then
    rocm-smi --showid | grep -oE '^GPU\[[0-9]+\]' | sort -u | wc -l
  else
    echo 0
  fi
}
[ -n "$n" ] || n=$(gpu_count)
[[ $n =~ ^[0-9]+$ ]] || { echo "ctest-gpus: N_GPUS '$n' is not a count" >&2; exit 2; }
if [ "$n" -eq 0 ]; then
  echo "ctest-gpus: no GPU found: the GPU suites run (and skip) as a plain ctest -L gpu" >&2
  exec ctest --test-dir "$build" -L gpu --output-on-failure "$@"
fi

spec=$(cd "$build" && pwd)/ctest-gpus.json  # absolute: ctest changes into the build directory
{
  printf '{"version": {"major": 1, "minor": 0}, "local": [{"gpus": ['
  for ((i = 0; i < n; i++)); do printf '%s{"id": "%d", "slots": 1}' "$([ $i -gt 0 ] && echo ', ')" "$i"; done
  printf ']}]}\n'
} >"$spec"
echo "ctest-gpus: $n GPU(s), resource spec $spec" >&2
ATTN_CTEST_GPUS=$n exec ctest --test-dir "$build" -L gpu --resource-spec-file "$spec" -j "$n" \
  --output-on-failure "$@"

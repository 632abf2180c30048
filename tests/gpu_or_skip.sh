#!/usr/bin/env bash
# Run a GPU command, or report a CTest skip (77) when this machine has no GPU device.
#   tests/gpu_or_skip.sh path/to/attn-harness ARGS...
hx=$1; shift
[ "$("$hx" info --slug)" = cpu ] && { echo "no GPU device: skipping"; exit 77; }
# Under scripts/ctest-gpus.sh CTest names this test's GPU ("id:N,slots:1"): run on it.
dev=()
[[ ${CTEST_RESOURCE_GROUP_0_GPUS:-} =~ ^id:([0-9]+) ]] && dev=(--device "${BASH_REMATCH[1]}")
exec "$hx" "$@" "${dev[@]}"

#!/usr/bin/env bash
# Run a GPU command, or report a CTest skip (77) when this machine has no GPU device.
#   tests/gpu_or_skip.sh path/to/attn-harness ARGS...
hx=$1; shift
[ "$("$hx" info --slug)" = cpu ] && { echo "no GPU device: skipping"; exit 77; }
exec "$hx" "$@"

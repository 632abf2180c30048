#!/usr/bin/env bash
# `make run`: run the default case file(s) on this machine's GPU if there is one, else on
# the CPU only, print the table, and write results/<device-slug>/<run>.{jsonl,csv}; then, where
# gnuplot is installed, draw this device's figures from every run in results/<device-slug>/
# into plots/<device-slug>/ (failing rows included: the error-by-position figure shows them).
#   scripts/run-default.sh BUILD_DIR RESULTS_DIR CASE_FILE...
set -euo pipefail
build=$1; results=$2; shift 2
hx="$build/attn-harness"
slug=$("$hx" info --slug)
run=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$results/$slug"
flags=()
[ "$slug" = cpu ] && flags+=(--cpu-only)
echo "attn-harness: device '$slug'; results in $results/$slug/$run.{jsonl,csv}" >&2
rc=0
"$hx" run "${flags[@]}" "$@" --json "$results/$slug/$run.jsonl" --csv "$results/$slug/$run.csv" || rc=$?
if [ -f "$results/$slug/$run.jsonl" ]; then
  if command -v gnuplot >/dev/null; then
    "$hx" plot -o plots "$results/$slug/" || echo "attn-harness: plot failed (exit $?)" >&2
  else
    echo "attn-harness: gnuplot not installed: no figures (scripts/deps.sh installs gnuplot-nox)" >&2
  fi
fi
exit "$rc"

#!/usr/bin/env bash
# SIGTERM (what `timeout` sends) during a run: the case under way finishes, the run stops there,
# keeps the records written so far under the --json/--csv names (whole lines only) and exits
# with 143; the cases after it are not run. On the CPU, so CI checks it without a GPU.
#   tests/cli_interrupt.sh path/to/attn-harness      (from the repository root)
set -u
hx=$1
. "$(dirname "$0")/cli_lib.sh"

# smoke (quick), then cpu-perf (seconds of f64 prefill), then edge: the signal is sent once the
# first records are on disk, so it lands well before edge's last case.
"$hx" run cases/smoke.ini cases/cpu-perf.ini cases/edge.ini --cpu-only \
  --json "$tmp/r.jsonl" --csv "$tmp/r.csv" >"$tmp/out" 2>"$tmp/err" &
pid=$!
for _ in $(seq 600); do # up to 60 s for the first record
  if [ -n "$(ls "$tmp"/r.jsonl.tmp* 2>/dev/null)" ] && [ -s "$(ls "$tmp"/r.jsonl.tmp* | head -1)" ]; then
    break
  fi
  sleep 0.1
done
kill -TERM "$pid"
wait "$pid"
code=$?

check "exit 143 (got $code)" [ "$code" -eq 143 ]
check "stderr says interrupted: $(cat "$tmp/err")" grep -q "interrupted (signal 15) after [0-9]* of [0-9]* cases; their records are kept in $tmp/r.jsonl and $tmp/r.csv" "$tmp/err"
check "the JSON file is kept under its name" [ -s "$tmp/r.jsonl" ]
check "no temporary file is left" [ -z "$(ls "$tmp"/*.tmp* 2>/dev/null)" ]
recs=$(wc -l <"$tmp/r.jsonl")
check "some records ($recs)" [ "$recs" -ge 1 ]
check "every record is a whole line" [ "$(grep -c '^{.*}$' "$tmp/r.jsonl")" -eq "$recs" ]
check "no edge case ran" [ "$(grep -c '"case":"edge_' "$tmp/r.jsonl")" -eq 0 ]
check "the CSV has one row per record" [ "$(($(wc -l <"$tmp/r.csv") - 1))" -eq "$recs" ]
finish cli_interrupt

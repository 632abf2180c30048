#!/usr/bin/env bash
# SIGTERM (what `timeout` sends) during a run: the case under way finishes, the run stops there,
# keeps the records written so far under the --json/--csv names (whole lines only) and exits
# with 143; the cases after it are not run. On the CPU, so CI checks it without a GPU.
#   tests/cli_interrupt.sh path/to/attn-harness      (from the repository root)
set -u
hx=$1
. "$(dirname "$0")/cli_lib.sh"

# smoke (quick), then cpu-perf (one f64 prefill of ~20 s), then edge: the signal is sent once
# the progress lines say cpu-perf's case has started, so it lands inside a case that outlasts
# everything below. It comes twice, 0.2 s apart, as `timeout` delivers it (to the command, then
# to its process group): still one request to stop after the case under way -- a handler that
# took the repeat for a second request would have ended the run at once (no kept records).
"$hx" run cases/smoke.ini cases/cpu-perf.ini cases/edge.ini --cpu-only --progress \
  --json "$tmp/r.jsonl" --csv "$tmp/r.csv" >"$tmp/out" 2>"$tmp/err" &
pid=$!
for _ in $(seq 1200); do # up to 120 s for the smoke cases (sanitizer builds are slow)
  grep -q "cpu_prefill_causal_8k_gqa4_d128/" "$tmp/err" 2>/dev/null && break
  sleep 0.1
done
kill -TERM "$pid"
sleep 0.2
kill -TERM "$pid"
wait "$pid"
code=$?

check "exit 143 (got $code)" [ "$code" -eq 143 ]
check "stderr says interrupted: $(tail -1 "$tmp/err")" grep -q "interrupted (signal 15) after [0-9]* of [0-9]* cases; their records are kept in $tmp/r.jsonl and $tmp/r.csv" "$tmp/err"
check "the JSON file is kept under its name" [ -s "$tmp/r.jsonl" ]
check "no temporary file is left" [ -z "$(ls "$tmp"/*.tmp* 2>/dev/null)" ]
recs=$(wc -l <"$tmp/r.jsonl")
check "some records ($recs)" [ "$recs" -ge 1 ]
check "every record is a whole line" [ "$(grep -c '^{.*}$' "$tmp/r.jsonl")" -eq "$recs" ]
check "the case under way finished" grep -q '"case":"cpu_prefill_causal_8k_gqa4_d128"' "$tmp/r.jsonl"
check "no edge case ran" [ "$(grep -c '"case":"edge_' "$tmp/r.jsonl")" -eq 0 ]
check "the CSV has one row per record" [ "$(($(wc -l <"$tmp/r.csv") - 1))" -eq "$recs" ]
finish cli_interrupt

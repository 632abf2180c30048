#!/usr/bin/env bash
# On a GPU: every variant's determinism and batch-invariance claims hold over the smoke and
# edge cases; resource failures end one row, never the sweep: device memory exhausted (the
# test hook ATTN_TEST_DEVICE_MEM_LIMIT=BYTES, a budget for the harness's device tensors) and
# a wait past --kernel-timeout (then the device is left alone and the remaining GPU rows are
# skipped). Exit 77 without a GPU.
#   tests/gpu_resources.sh path/to/attn-harness
set -u
hx=$1
[ "$("$hx" info --slug)" = cpu ] && { echo "no GPU device: skipping"; exit 77; }
. "$(dirname "$0")/cli_lib.sh"
run() {
  local want=$1; shift
  n=$((n + 1))
  timeout 600 "$hx" run "$@" --json "$tmp/r.jsonl" >"$tmp/out" 2>"$tmp/err"
  local got=$?
  if [ "$got" -ne "$want" ]; then
    fail "attn-harness run $*: exit $got (want $want)"
    sed 's/^/    /' "$tmp/out" "$tmp/err" | tail -30
  fi
}
# count FILTER...: JSON records of GPU rows (not the emulated candidate) matching every FILTER
# (a regex; !REGEX: not matching)
count() {
  local recs
  recs=$(grep -v '"variant":"emulated"' "$tmp/r.jsonl")
  for f in "$@"; do
    if [ "${f#!}" != "$f" ]; then recs=$(grep -v -- "${f#!}" <<<"$recs"); else recs=$(grep -- "$f" <<<"$recs"); fi
  done
  [ -n "$recs" ] && wc -l <<<"$recs" || echo 0
}

# 1. The claims: every GPU variant deterministic, and batch-invariant where it says so.
run 0 cases/smoke.ini cases/edge.ini --no-timing --determinism --batch-invariance
gpu_rows=$(count '"status":"PASS"')
check "GPU rows ran" [ "$gpu_rows" -gt 0 ]
check "every passing GPU row deterministic" [ "$(count '"status":"PASS"' '"deterministic":true')" -eq "$gpu_rows" ]
check "some GPU rows batch-invariant" [ "$(count '"batch_invariant":true')" -gt 0 ]
grep "note:" "$tmp/out" | sed 's/^/    info: /'

# 1b. ... and the GPU checks can fail: the test hook flips one bit of every rerun's output, so
#     each GPU row that claims determinism must fail as nondeterministic.
ATTN_TEST_PERTURB=rerun run 1 cases/smoke.ini --no-timing --determinism --variant simple
check "a perturbed GPU rerun fails its row" [ "$(count '"status":"FAIL_NONDETERMINISTIC"')" -gt 0 ]

# 2. Device memory exhausted: every GPU row an ERROR naming the tensor, the CPU rows still
#    judged, the sweep complete.
ATTN_TEST_DEVICE_MEM_LIMIT=4096 run 1 cases/smoke.ini --no-timing
check "every GPU row that runs is out of device memory" \
  [ "$(count '"status":"ERROR"' 'out of device memory: [0-9]* bytes for tensor')" -eq "$(count '!SKIP_UNSUPPORTED')" ]
check "some GPU row ran into the limit" [ "$(count '"status":"ERROR"' 'out of device memory')" -gt 0 ]
check "every emulated row still PASS" [ "$(grep -c '"variant":"emulated".*"status":"PASS"' "$tmp/r.jsonl")" -eq 17 ]

# 3. A wait past the timeout: that row ERROR, every later GPU row skipped, the CPU rows and
#    the result file complete, and the process ends. The first GPU launch is a long one (a
#    4096-token causal prefill, milliseconds), so it is surely still running at the deadline.
printf '%s\n' "[long_first]" "path = mha_varlen" "heads_q = 16" "heads_kv = 2" "head_dim = 128" \
  "seq_lens = 4096" "atol.out = 1.5e-2" "tol_reason = few visible keys on the first rows" >"$tmp/long.ini"
run 1 "$tmp/long.ini" cases/smoke.ini --no-timing --kernel-timeout 0.000001
check "the long launch timed out" \
  [ "$(count '"case":"long_first"' '"status":"ERROR"' 'kernel exceeded 1e-06 s (--kernel-timeout); device state unknown')" -eq 1 ]
check "every later GPU row skipped" [ "$(count '"status":"SKIP_NO_GPU"' 'GPU unusable')" -eq "$(($(count .) - 1))" ]
check "every emulated row still PASS" [ "$(grep -c '"variant":"emulated".*"status":"PASS"' "$tmp/r.jsonl")" -eq 18 ]

finish

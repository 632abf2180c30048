#!/usr/bin/env bash
# --determinism, --batch-invariance, --progress and resource failures through the CLI, on the
# CPU (the `emulated` candidate), so CI checks them without a GPU. Each check is shown to be
# able to fail: the hidden hook ATTN_TEST_PERTURB flips one bit of every rerun's output.
#   tests/cli_determinism.sh path/to/attn-harness
set -u
hx=$1
. "$(dirname "$0")/cli_lib.sh"
# run WANT_EXIT ARGS...: attn-harness run, stdout in $tmp/out, stderr in $tmp/err
run() {
  local want=$1; shift
  n=$((n + 1))
  "$hx" run "$@" >"$tmp/out" 2>"$tmp/err"
  local got=$?
  if [ "$got" -ne "$want" ]; then
    fail "attn-harness run $*: exit $got (want $want)"
    sed 's/^/    /' "$tmp/out" "$tmp/err" | tail -20
  fi
}
# rows PATH KEY VALUE: every JSON record of PATH in $tmp/r.jsonl has "KEY":VALUE
rows() {
  local recs
  recs=$(grep "\"path\":\"$1\"" "$tmp/r.jsonl")
  [ -n "$recs" ] && ! grep -v "\"$2\":$3" <<<"$recs" | grep -q .
}

# 1. Every smoke case, both checks: all pass; the records say what was checked. The emulated
#    extend is deterministic but, by design, not batch-invariant (its chunks span requests):
#    recorded as false with a note, not failed.
run 0 cases/smoke.ini --cpu-only --determinism --batch-invariance --json "$tmp/r.jsonl"
check "17 records" [ "$(wc -l <"$tmp/r.jsonl")" -eq 17 ]
check "every record deterministic" [ "$(grep -c '"deterministic":true' "$tmp/r.jsonl")" -eq 17 ]
for p in mha_varlen paged_decode mla_decode dsv4_sparse_decode; do
  check "$p batch-invariant" rows $p batch_invariant true
done
for p in merge_states cache_write gather_cache mixed mla_prefill; do
  check "$p: batch invariance not applicable (null)" rows $p batch_invariant null
done
check "extend: batch invariance recorded false" rows extend batch_invariant false
check "extend: note, not a failure" grep -q "note: batch invariance: request .* (not claimed" "$tmp/out"

# 2. The determinism check fails when a rerun differs.
ATTN_TEST_PERTURB=rerun run 1 cases/smoke.ini --cpu-only --determinism --json "$tmp/r.jsonl"
check "a rerun that differs is FAIL_NONDETERMINISTIC" \
  [ "$(grep -c '"status":"FAIL_NONDETERMINISTIC"' "$tmp/r.jsonl")" -eq 17 ]
check "the message names the first difference" \
  grep -q "nondeterministic: a rerun: 1 of [0-9]* elements of 'out' differ, first at seq 0" "$tmp/out"
check "recorded false" [ "$(grep -c '"deterministic":false' "$tmp/r.jsonl")" -eq 17 ]

# 3. The batch-invariance check fails when the request run alone differs (claimed paths),
#    and stays a note where the candidate does not claim it (extend). Claimed: the 10 smoke
#    cases of mha_varlen (3), paged_decode (3), mla_decode (2), dsv4_sparse_decode (2).
ATTN_TEST_PERTURB=batch run 1 cases/smoke.ini --cpu-only --batch-invariance --json "$tmp/r.jsonl"
check "a request that differs alone is FAIL_NONDETERMINISTIC" \
  [ "$(grep -c '"status":"FAIL_NONDETERMINISTIC"' "$tmp/r.jsonl")" -eq 10 ]
check "the message names the request" grep -q "batch invariance: request [0-9]* of [0-9]* run alone" "$tmp/out"
check "extend stays PASS (not claimed)" rows extend status '"PASS"'

# 4. Control: the hook changes nothing when no check runs.
ATTN_TEST_PERTURB=rerun run 0 cases/smoke.ini --cpu-only

# 5. Progress to a file (not a terminal): plain lines, cases done/total, case/candidate,
#    elapsed and ETA.
run 0 cases/smoke.ini --cpu-only --progress
check "progress lines" grep -q '^\[17/17\] smoke_dsv4_c128_bs1_bs2_sink_pos_inf/emulated  elapsed .*  ETA ' "$tmp/err"
check "an ETA estimated" grep -Eq 'ETA [0-9]+\.[0-9] s$' "$tmp/err"
check "no carriage return off a terminal" bash -c "! grep -q $'\r' '$tmp/err'"

# 6. Host memory exhausted (an address-space limit): that case is an ERROR row, the next
#    case still runs, the result file is whole. Not under ASan, which needs the address space.
#    Few threads: OpenBLAS's per-thread buffers on a many-core machine would need the limit
#    (and hang in its start-up when they do not get it).
printf '%s\n' "[huge]" "path = mha_varlen" "heads_q = 8" "head_dim = 128" "seq_lens = 4194304" \
  "[small_after]" "path = mha_varlen" "heads_q = 2" "head_dim = 64" "seq_lens = 5,3" \
  "atol.out = 1.5e-2" "tol_reason = few visible keys" >"$tmp/big.ini"
if grep -q __asan_init "$hx"; then
  echo "ASan build: host out-of-memory check skipped"
else
  n=$((n + 1))
  (ulimit -v 4000000; OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 timeout 120 \
     "$hx" run "$tmp/big.ini" --cpu-only --json "$tmp/big.jsonl" >"$tmp/out" 2>"$tmp/err")
  rc=$?
  if [ $rc -ne 1 ] || ! grep -Eq '^huge +reference +ERROR' "$tmp/out" ||
     ! grep -q "cannot allocate 8589934592 bytes for tensor 'q'" "$tmp/out" ||
     ! grep -Eq '^small_after +emulated +PASS' "$tmp/out" || [ "$(wc -l <"$tmp/big.jsonl")" -ne 2 ]; then
    fail "host out of memory: exit $rc"; sed 's/^/    /' "$tmp/out" "$tmp/err"
  fi
  check "no temporary file left" bash -c "! ls '$tmp'/big.jsonl.* 2>/dev/null | grep -q ."
fi

# 7. Usage errors of the new options.
run 2 cases/smoke.ini --kernel-timeout abc
run 2 cases/smoke.ini --kernel-timeout -1

finish

#!/usr/bin/env bash
# The CLI on bad input: one clear line naming the place and the fix, and the documented exit
# code (2 usage/case file, 3 runtime). Never a crash, never a half-written result file.
#   tests/cli_bad_input.sh path/to/attn-harness
set -u
hx=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0 n=0

# expect CODE REGEX -- ARGS...: exit code CODE and stderr matching REGEX
expect() {
  local code=$1 re=$2; shift 3
  n=$((n + 1))
  "$hx" "$@" >"$tmp/out" 2>"$tmp/err"
  local got=$?
  if [ "$got" -ne "$code" ] || { [ -n "$re" ] && ! grep -Eq -- "$re" "$tmp/err"; }; then
    echo "FAIL: attn-harness $*: exit $got (want $code), stderr:"; sed 's/^/    /' "$tmp/err"
    fails=$((fails + 1))
  fi
}

case_file() { printf '%s\n' "$@" >"$tmp/c.ini"; }

expect 2 "unknown command 'frobnicate'" -- frobnicate
expect 2 "no case file given" -- run
expect 2 "--shard '3/2'" -- run --shard 3/2 cases/smoke.ini
expect 2 "--seed 'abc'" -- run --seed abc cases/smoke.ini
expect 2 "unrecognized option|unknown option" -- run --bogus cases/smoke.ini
expect 2 "cannot open case file '$tmp/none.ini'" -- run "$tmp/none.ini"

case_file "[a]" "path = mha_varlen" "heads_q = 4" "head_dim = 64" "seq_lens = 3" "block_size = 16"
expect 2 "c.ini:6: \[a\] .*'block_size'" -- run "$tmp/c.ini"
case_file "[a]" "path = mha_varlen" "heads_q = 6" "heads_kv = 4" "head_dim = 64" "seq_lens = 3"
expect 2 "c.ini:4: \[a\] key 'heads_kv'.*divide" -- run "$tmp/c.ini"
case_file "[a]" "path = warp_drive"
expect 2 "c.ini:2: .*unknown path 'warp_drive'" -- run "$tmp/c.ini"
case_file "[a]" "path = mha_varlen" "heads_q = four"
expect 2 "c.ini:3: .*'heads_q'" -- run "$tmp/c.ini"
case_file "[a]" "path = mha_varlen" "heads_q = 4" "head_dim = 64" "seq_lens = 3,-1"
expect 2 "c.ini:5: .*seq_lens" -- run "$tmp/c.ini"
case_file "[a" "path = mha_varlen"
expect 2 "c.ini:1: syntax error" -- run "$tmp/c.ini"

# A bad --inputs tensor stops the run with exit 2 and leaves no result file behind.
case_file "[a]" "path = mha_varlen" "heads_q = 2" "head_dim = 64" "seq_lens = 3"
mkdir -p "$tmp/in/a"
printf 'not a numpy file' >"$tmp/in/a/q.npy"
expect 2 "q.npy" -- run "$tmp/c.ini" --inputs "$tmp/in" --json "$tmp/r.jsonl"
n=$((n + 1))
if ls "$tmp"/r.jsonl* >/dev/null 2>&1; then echo "FAIL: a result file was left behind"; fails=$((fails + 1)); fi

# Unwritable result file: runtime error, exit 3.
expect 3 "cannot write '$tmp/no/such/dir/r.jsonl" -- run "$tmp/c.ini" --json "$tmp/no/such/dir/r.jsonl"

# A good run writes complete files, and --dump / --inputs round-trip.
expect 0 "" -- run "$tmp/c.ini" --cpu-only --json "$tmp/ok.jsonl" --csv "$tmp/ok.csv" --dump "$tmp/dump"
n=$((n + 1))
if [ "$(wc -l <"$tmp/ok.jsonl")" -ne 1 ] || [ "$(wc -l <"$tmp/ok.csv")" -ne 2 ] ||
   [ ! -f "$tmp/dump/a/q.npy" ] || [ ! -f "$tmp/dump/a/ref.out.npy" ] || [ ! -f "$tmp/dump/a/emulated.out.npy" ]; then
  echo "FAIL: good run did not write the expected files"; fails=$((fails + 1))
fi
expect 0 "" -- run "$tmp/c.ini" --inputs "$tmp/dump"

echo "$((n - fails)) passed, $fails failed"
[ "$fails" -eq 0 ]

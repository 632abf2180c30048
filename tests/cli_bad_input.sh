#!/usr/bin/env bash
# The CLI on bad input: one clear line naming the place and the fix, and the documented exit
# code (2 usage/case file, 3 runtime). Never a crash, never a half-written result file.
# Every row of the README's "Bad input" table is checked here (the out-of-device-memory row
# by tests/gpu_resources.sh, on a GPU).
#   tests/cli_bad_input.sh path/to/attn-harness
set -u
hx=$1
. "$(dirname "$0")/cli_lib.sh"

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

# npy_i32 FILE SHAPE VALUES...: a .npy of little-endian int32, written byte by byte as
# numpy.save does (SHAPE as NumPy prints it: "2, 2" or "2,").
i32le() {
  local v
  for v in "$@"; do
    v=$((v & 0xFFFFFFFF))
    printf "$(printf '\\%03o\\%03o\\%03o\\%03o' $((v & 255)) $((v >> 8 & 255)) $((v >> 16 & 255)) $((v >> 24)))"
  done
}
npy_i32() {
  local f=$1 shape=$2
  shift 2
  local dict="{'descr': '<i4', 'fortran_order': False, 'shape': ($shape), }"
  local hlen=$(((10 + ${#dict} + 1 + 63) / 64 * 64 - 10))
  mkdir -p "$(dirname "$f")"
  { printf '\223NUMPY\001\000'; printf "$(printf '\\%03o\\%03o' $((hlen & 255)) $((hlen >> 8)))"
    printf '%s%*s\n' "$dict" $((hlen - ${#dict} - 1)) ''; i32le "$@"; } >"$f"
}

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
expect 2 "c.ini:1: syntax error: expected 'key = value' or '\[case\]'" -- run "$tmp/c.ini"

# The README's "Bad input" table, row by row.
# Unknown key; a value the key does not take; the file's control characters escaped.
case_file "[a]" "path = mha_varlen" "heads_q = 4" "head_dim = 64" "seq_lens = 3" "bogus = 1"
expect 2 "c.ini:6: \[a\] unknown key 'bogus'; accepted keys for path 'mha_varlen': path tags " -- run "$tmp/c.ini"
case_file "[a]" "path = mha_varlen" "heads_q = 4" "head_dim = 64" "head_dim = 32"
expect 2 "c.ini:5: \[a\] key 'head_dim': given twice \(lines 4 and 5\); keep one" -- run "$tmp/c.ini"
case_file "[a]" "path = mha_varlen" "batch = 2147483647"
expect 2 "c.ini:3: \[a\] key 'batch': expected an integer from 1 to 1048576, got '2147483647'" -- run "$tmp/c.ini"
printf '[a]\npath = mha_varlen\ncausal = ma\rybe\033[2J\n' >"$tmp/c.ini"
expect 2 "c.ini:3: \[a\] key 'causal': expected true/false \(or yes/no, 1/0\), got 'ma\\\\x0dybe\\\\x1b\[2J'" -- run "$tmp/c.ini"
# Impossible shape: a head_dim the cache layout cannot hold.
case_file "[a]" "path = paged_decode" "heads_q = 4" "head_dim = 60" "seq_lens = 3" "layout = shuffled"
expect 2 "c.ini:4: \[a\] key 'head_dim': 60 is not a multiple of x = 8, which layout = shuffled needs" -- run "$tmp/c.ini"
# Inconsistent lengths: a list that is not batch long, a range without batch, a window longer
# than its context, and a pool too small for the contexts (found when the case runs).
case_file "[a]" "path = paged_decode" "batch = 4" "heads_q = 4" "head_dim = 64" "seq_lens = 1,2,3"
expect 2 "c.ini:6: \[a\] key 'seq_lens': seq_lens has 3 values but batch is 4" -- run "$tmp/c.ini"
case_file "[a]" "path = mha_varlen" "heads_q = 4" "head_dim = 64" "seq_lens = 3000..4096"
expect 2 "c.ini:5: \[a\] key 'seq_lens': '3000..4096' is drawn per sequence: give 'batch' for a range" -- run "$tmp/c.ini"
case_file "[a]" "path = gather_cache" "heads_kv = 1" "head_dim = 64" "context_lens = 10,20" "seq_lens = 5,30"
expect 2 "c.ini:6: \[a\] key 'seq_lens': sequence 1 gathers 30 tokens but holds context_lens = 20" -- run "$tmp/c.ini"
case_file "[a]" "path = paged_decode" "heads_q = 4" "head_dim = 64" "seq_lens = 300" "num_blocks = 4"
expect 2 "c.ini:6: \[a\] key 'num_blocks': 4 blocks cannot hold the 19 blocks the sequences need" -- run "$tmp/c.ini" --cpu-only

# --inputs: out-of-range block ids and sparse indices, lengths that disagree with the case.
# A file with the right values loads (so the hand-written .npy is sound), one wrong value does not.
case_file "[pd]" "path = paged_decode" "heads_q = 4" "head_dim = 64" "seq_lens = 20,3" \
          "[v4]" "path = dsv4_sparse_decode" "heads_q = 8" "positions = 5, 130" "window = 4" "topk = 8"
npy_i32 "$tmp/ids/pd/seq_lens.npy" "2," 20 3
expect 0 "" -- run "$tmp/c.ini" --cpu-only --no-timing --filter pd --inputs "$tmp/ids"
npy_i32 "$tmp/ids/pd/seq_lens.npy" "2," 20 40
expect 2 "\[pd\] seq_lens\[1\] = 40 but the case says 3" -- run "$tmp/c.ini" --cpu-only --filter pd --inputs "$tmp/ids"
rm "$tmp/ids/pd/seq_lens.npy"
npy_i32 "$tmp/ids/pd/block_table.npy" "2, 2" 0 99 2 -1
expect 2 "\[pd\] block_table\[0\]\[1\] = 99 is outside the pool of 3 blocks" -- run "$tmp/c.ini" --cpu-only --filter pd --inputs "$tmp/ids"
npy_i32 "$tmp/ids/v4/extra_idx.npy" "2, 8" 99999 -1 -1 -1 -1 -1 -1 -1 0 1 2 3 4 5 6 7
expect 2 "\[v4\] extra_idx\[0\]\[0\] = 99999 is neither -1 nor a slot of the [0-9]+ in extra_cache" -- run "$tmp/c.ini" --cpu-only --filter v4 --inputs "$tmp/ids"
rm "$tmp/ids/v4/extra_idx.npy"
npy_i32 "$tmp/ids/v4/swa_len.npy" "2," 4 9
expect 2 "\[v4\] swa_len\[1\] = 9 is outside \[0, 4\]" -- run "$tmp/c.ini" --cpu-only --filter v4 --inputs "$tmp/ids"

# Unsupported variant: a name no path of this build has is a usage error (exit 2); a variant
# that cannot run a case is a SKIP_UNSUPPORTED row with the reason (a GPU build on a GPU).
case_file "[a]" "path = paged_decode" "heads_q = 4" "head_dim = 96" "seq_lens = 40"
expect 2 "--variant 'nosuch': no path has such a variant in this build \(attn-harness list\)" -- run "$tmp/c.ini" --variant nosuch
if [ "$("$hx" info --slug)" != cpu ]; then
  expect 0 "" -- run "$tmp/c.ini" --variant split_kv --no-timing
  n=$((n + 1))
  grep -Eq "^a +split_kv +SKIP_UNSUPPORTED" "$tmp/out" &&
    grep -q "split_kv is built for head_dim 64, 128 and 256" "$tmp/out" ||
    { echo "FAIL: no SKIP_UNSUPPORTED row for split_kv at head_dim 96:"; sed 's/^/    /' "$tmp/out"; fails=$((fails + 1)); }
else
  echo "note: no GPU: the SKIP_UNSUPPORTED check needs one (run by CI's GPU jobs)"
fi

# A bad --inputs tensor stops the run with exit 2 and leaves no result file behind.
case_file "[a]" "path = mha_varlen" "heads_q = 2" "head_dim = 64" "seq_lens = 3"
mkdir -p "$tmp/in/a"
printf 'not a numpy file' >"$tmp/in/a/q.npy"
expect 2 "'$tmp/in/a/q.npy' is not a .npy file \(bad magic; save it with numpy.save\)" -- run "$tmp/c.ini" --inputs "$tmp/in" --json "$tmp/r.jsonl"
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

# Unreadable tensor files: no directory for the case, none of its tensors, the wrong dtype, the
# wrong shape, a truncated file (the garbled one is above). Each stops the run with exit 2.
expect 2 "--inputs: no directory '$tmp/nodir/a' for case \[a\]" -- run "$tmp/c.ini" --inputs "$tmp/nodir"
mkdir -p "$tmp/none/a"
expect 2 "--inputs: '$tmp/none/a' holds none of the case's input tensors" -- run "$tmp/c.ini" --inputs "$tmp/none"
npy_i32 "$tmp/bad/a/q.npy" "3, 2, 64"
expect 2 "'$tmp/bad/a/q.npy' holds '<i4' data but tensor 'q' is bf16 \(needs '<u2', or '<f4' to be rounded\)" -- run "$tmp/c.ini" --inputs "$tmp/bad"
rm "$tmp/bad/a/q.npy"
npy_i32 "$tmp/bad/a/cu_seqlens_q.npy" "3," 0 3 3
expect 2 "'$tmp/bad/a/cu_seqlens_q.npy' has shape \[3\] but the case needs \[2\] \(tensor 'cu_seqlens_q'\)" -- run "$tmp/c.ini" --inputs "$tmp/bad"
rm "$tmp/bad/a/cu_seqlens_q.npy"
head -c 200 "$tmp/dump/a/q.npy" >"$tmp/bad/a/q.npy"
expect 2 "'$tmp/bad/a/q.npy' is truncated: [0-9]+ of 768 data bytes" -- run "$tmp/c.ini" --inputs "$tmp/bad"

finish

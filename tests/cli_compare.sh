#!/usr/bin/env bash
# `attn-harness compare` on the synthetic GPU records of tests/data (make_fixtures.py): exit 0
# for noise, drift inside tolerance and merged shards; 1 for a clear slowdown or a status
# regression; 2 for usage errors and unreadable records, named file:line.
#   tests/cli_compare.sh path/to/attn-harness      (from the repository root)
set -u
hx=$1
d=tests/data
. "$(dirname "$0")/cli_lib.sh"

# expect CODE REGEX -- ARGS...: exit code CODE, and stdout + stderr (as one line) matching REGEX
expect() {
  local code=$1 re=$2; shift 3
  n=$((n + 1))
  "$hx" "$@" >"$tmp/out" 2>&1
  local got=$?
  if [ "$got" -ne "$code" ] || { [ -n "$re" ] && ! tr '\n' ' ' <"$tmp/out" | grep -Eq -- "$re"; }; then
    echo "FAIL: attn-harness $*: exit $got (want $code, output matching '$re'):"
    sed 's/^/    /' "$tmp/out"
    fails=$((fails + 1))
  fi
}

base=$d/h200_base.jsonl
expect 0 "0 slower .*-> ok" -- compare $base $base
# every median moved by at most half its spread: same; a max_abs x2 inside tolerance: drift
expect 0 "11 same, 6 untimed.*1 accuracy drifts.*-> ok" -- compare $base $d/h200_noise.jsonl
expect 0 "split_kv .* same .*out max_abs 4.04e-03 -> 8.08e-03 \(x2.0\)" -- \
  compare $base $d/h200_noise.jsonl --only-changes
# one variant 1.6x slower, its spread 3%: FAIL; with --fail 2 only SLOWER
expect 1 "smoke_decode_gqa4_nhd +split_kv .* 1\.600 .* FAIL " -- compare $base $d/h200_slow.jsonl
expect 0 "smoke_decode_gqa4_nhd +split_kv .* SLOWER .*1 slower \(0 past --fail 2.00\)" -- \
  compare --fail 2 $base $d/h200_slow.jsonl
# PASS -> FAIL_NUMERIC fails whatever the times say
expect 1 "smoke_merge +vec .*PASS -> FAIL_NUMERIC \(regression\).*1 status regressions" -- \
  compare $base $d/h200_status.jsonl
# shards: merged, the record read twice is named, the last read wins
expect 0 "h200_shard1.jsonl:9 replaces .*h200_shard0.jsonl:1 .*0 new, 0 missing" -- \
  compare --base $base --new $d/h200_shard0.jsonl --new $d/h200_shard1.jsonl
# a directory of shards is one side
mkdir -p "$tmp/shards" && cp $d/h200_shard0.jsonl $d/h200_shard1.jsonl "$tmp/shards/"
expect 0 "17 matched" -- compare $base "$tmp/shards"
# new and missing rows
head -n 5 $base >"$tmp/part.jsonl"
expect 0 "5 matched.* 0 new, 12 missing" -- compare $base "$tmp/part.jsonl"
expect 1 "5 matched.* 0 new, 12 missing.*-> FAIL" -- compare --missing-fails $base "$tmp/part.jsonl"
expect 0 "5 matched.* 12 new, 0 missing" -- compare "$tmp/part.jsonl" $base
# two GPUs: nothing in common unless asked
expect 2 "no \(case, variant, device\) in common .*--cross-device" -- compare $base $d/h100_base.jsonl
expect 1 "17 matched" -- compare --cross-device $base $d/h100_base.jsonl

# usage
expect 0 "usage: attn-harness compare" -- compare --help
expect 2 "expected BASE NEW" -- compare $base
expect 2 "--fail must be >= --warn" -- compare --warn 1.3 --fail 1.2 $base $base
expect 2 "--warn 'x': expected a ratio >= 1" -- compare --warn x $base $base
expect 2 "unrecognized option|unknown option" -- compare --bogus $base $base

# unreadable records: file:line and what is wrong, exit 2
expect 2 "malformed.jsonl:3: column [0-9]+: expected" -- compare $base $d/malformed.jsonl
bad() { printf '%s\n' "$@" >"$tmp/bad.jsonl"; }
rec='"case":"a","variant":"v","device":"cpu","status":"PASS"'
bad "{\"schema\":1,$rec}" '{"schema":2,"case":"a"}'
expect 2 "bad.jsonl:2: schema 2: this build reads schema 1" -- compare $base "$tmp/bad.jsonl"
bad '{"schema":1,"case":"a","variant":"v","device":"cpu"}'
expect 2 "bad.jsonl:1: key 'status' missing" -- compare $base "$tmp/bad.jsonl"
bad '{"schema":1,"case":5,"variant":"v","device":"cpu","status":"PASS"}'
expect 2 "bad.jsonl:1: key 'case': expected a string" -- compare $base "$tmp/bad.jsonl"
bad "{\"schema\":1,$rec,\"timing\":{\"median_ms\":\"fast\"}}"
expect 2 "bad.jsonl:1: key 'median_ms': expected a number or null" -- compare $base "$tmp/bad.jsonl"
bad '[1,2]'
expect 2 "bad.jsonl:1: column 1: a record is a JSON object" -- compare $base "$tmp/bad.jsonl"
bad '' "{\"schema\":1,$rec} trailing"
expect 2 "bad.jsonl:2: column 70: unexpected text after the record" -- compare $base "$tmp/bad.jsonl"
bad "{\"schema\":1,$rec,\"message\":\"tab	inside\"}"
expect 2 "bad.jsonl:1: column [0-9]+: control character inside a string" -- compare $base "$tmp/bad.jsonl"
bad "{\"schema\":1,$rec,\"x\":NaN}"
expect 2 "bad.jsonl:1: column [0-9]+: expected a value" -- compare $base "$tmp/bad.jsonl"
bad '{"schema":1,"case":"a"'
expect 2 "bad.jsonl:1: column [0-9]+: expected ',' or '}'" -- compare $base "$tmp/bad.jsonl"
bad 'case,variant,status'
expect 2 "bad.jsonl:1: column 1: expected a value" -- compare $base "$tmp/bad.jsonl"
bad "{\"schema\":1,\"case\":\"a\\nb\",\"variant\":\"x\",\"device\":\"cpu\",\"status\":\"PASS\"}"
expect 2 "bad.jsonl:1: key 'case': control character in the name" -- compare $base "$tmp/bad.jsonl"
# one slow outlier inflates the new run's stddev to 60% of its median: it may not excuse a
# 1.6x slowdown (the spread's allowance stops at the fail threshold)
t() { printf '{"schema":1,"case":"o","variant":"mma","device":"gpu","status":"PASS","timing":{"samples":200,"median_ms":%s,"min_ms":%s,"max_ms":%s,"stddev_ms":%s}}\n' "$@"; }
t 1.0 0.99 1.02 0.005 >"$tmp/ob.jsonl"
t 1.6 1.58 15.0 1.0 >"$tmp/on.jsonl"
expect 1 "1 slower \(1 past --fail" -- compare "$tmp/ob.jsonl" "$tmp/on.jsonl"
# unknown keys, escapes, nesting and blank lines are fine; nothing in common is then the error
bad "{\"schema\":1,$rec,\"future\":{\"a\":[1,{\"b\":null}],\"s\":\"\\u00e9\\\"\\n\"}}" ''
expect 2 "no \(case, variant, device\) in common" -- compare $base "$tmp/bad.jsonl"
mkdir -p "$tmp/empty"
expect 2 "no \*\.jsonl result files under '$tmp/empty'" -- compare $base "$tmp/empty"
expect 2 "cannot open result file '$tmp/none.jsonl'" -- compare $base "$tmp/none.jsonl"

finish cli_compare

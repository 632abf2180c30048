#!/usr/bin/env bash
# `attn-harness plot`: every figure, as non-empty SVG and PNG, from the synthetic GPU records of
# tests/data (two GPUs and PyTorch peers) and from a real CPU run of cases/smoke.ini; shards
# merged; exit 2 on bad input, 3 without gnuplot. Skipped (77) where gnuplot is not installed.
#   tests/cli_plot.sh path/to/attn-harness      (from the repository root)
set -u
hx=$1
d=tests/data
command -v gnuplot >/dev/null || { echo "gnuplot not installed: skipping"; exit 77; }
. "$(dirname "$0")/cli_lib.sh"

# run_ok NAME REGEX -- ARGS...: exit 0 and stdout + stderr (as one line) matching REGEX
run_ok() {
  local name=$1 re=$2; shift 3
  n=$((n + 1))
  if ! "$hx" "$@" >"$tmp/$name.log" 2>&1 || ! tr '\n' ' ' <"$tmp/$name.log" | grep -Eq -- "$re"; then
    fail "attn-harness $*: want exit 0 and output matching '$re':"
    sed 's/^/    /' "$tmp/$name.log"
  fi
}

# figure FILE_BASE [TEXT...]: .svg and .png exist and are not empty; the SVG holds each TEXT
figure() {
  local f=$1; shift
  n=$((n + 1))
  for ext in svg png; do
    [ -s "$f.$ext" ] || { fail "$f.$ext missing or empty"; return; }
  done
  head -c 8 "$f.png" | grep -q PNG || fail "$f.png is not a PNG"
  grep -q '<svg' "$f.svg" || fail "$f.svg is not an SVG"
  for t in "$@"; do
    grep -qF -- "$t" "$f.svg" || fail "$f.svg does not name '$t'"
  done
}

# Two GPUs, the PyTorch peers of one, in files and in a results/<slug>/ directory.
mkdir -p "$tmp/results/nvidia-h200"
cp $d/h200_base.jsonl $d/h200_torch.jsonl "$tmp/results/nvidia-h200/"
o=$tmp/plots
run_ok gpus "nvidia-h200 \(19 records\).*nvidia-h100-80gb-hbm3 \(17 records\).*7 figures" -- \
  plot -o "$o" "$tmp/results/" $d/h100_base.jsonl
h200=$o/nvidia-h200 h100=$o/nvidia-h100-80gb-hbm3
figure "$h200/speedup" split_kv vec torch_sdpa_flash smoke_decode_gqa4_nhd paged_decode
figure "$h200/roofline" "read 4263 GB/s" "copy 3923 GB/s" "bf16 mma 642 TFLOP/s" torch_sdpa_flash
figure "$h200/errpos" "out (emulated)" "smoke_decode_fp8_shuffled_high_blocks / simple"
figure "$h100/speedup" split_kv
figure "$h100/roofline" "read 3105 GB/s"
figure "$h100/errpos"
figure "$o/speedup-gpus" nvidia-h200 nvidia-h100-80gb-hbm3 smoke_merge/vec
n=$((n + 1))
[ -s "$h200/speedup.dat" ] && [ -s "$h200/roofline.dat" ] && [ -s "$h200/errpos.dat" ] ||
  fail "the .dat files gnuplot read are not kept beside the figures"

# Shards of one run: merged, the record read twice named; one GPU: no figure across GPUs.
run_ok shards "h200_shard1.jsonl:9 replaces .*h200_shard0.jsonl:1 .*nvidia-h200 \(17 records\).*3 figures" -- \
  plot -o "$tmp/shards" $d/h200_shard0.jsonl $d/h200_shard1.jsonl
figure "$tmp/shards/nvidia-h200/speedup"
n=$((n + 1))
[ ! -e "$tmp/shards/speedup-gpus.svg" ] || fail "a figure across GPUs from one GPU"

# A real CPU run: the emulated rows carry err_by_row; roofline against dgemm; no speedup.
mkdir -p "$tmp/cpu"
n=$((n + 1))
"$hx" run cases/smoke.ini --cpu-only --json "$tmp/cpu/run.jsonl" >/dev/null 2>&1 ||
  fail "attn-harness run cases/smoke.ini --cpu-only failed"
grep -q '"err_by_row":{"axis":0,"rows":' "$tmp/cpu/run.jsonl" || fail "run --json writes no err_by_row"
run_ok cpu "cpu \(17 records\).*speedup: no case .*skipped.*2 figures" -- plot -o "$tmp/cpu-plots" "$tmp/cpu"
figure "$tmp/cpu-plots/cpu/roofline" "OpenBLAS dgemm"
figure "$tmp/cpu-plots/cpu/errpos" emulated

# Errors: usage and bad files 2 (file:line), gnuplot missing 3.
expect_rc() {
  local code=$1 re=$2; shift 3
  n=$((n + 1))
  "$hx" "$@" >"$tmp/err.log" 2>&1
  local got=$?
  if [ "$got" -ne "$code" ] || ! grep -Eq -- "$re" "$tmp/err.log"; then
    fail "attn-harness $*: exit $got (want $code, output matching '$re'):"
    sed 's/^/    /' "$tmp/err.log"
  fi
}
expect_rc 0 "usage: attn-harness plot" -- plot --help
expect_rc 2 "no result file or directory given" -- plot
expect_rc 2 "malformed.jsonl:3: column [0-9]+:" -- plot -o "$tmp/x" $d/malformed.jsonl
expect_rc 2 "--worst '0'" -- plot --worst 0 $d/h200_base.jsonl
expect_rc 3 "gnuplot not found \('$tmp/no-gnuplot'\)" -- plot --gnuplot "$tmp/no-gnuplot" -o "$tmp/x" $d/h200_base.jsonl
expect_rc 2 "--scripts '$tmp': no speedup.gp" -- plot --scripts "$tmp" -o "$tmp/x" $d/h200_base.jsonl

finish cli_plot

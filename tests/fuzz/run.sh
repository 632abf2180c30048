#!/bin/sh
# A bounded libFuzzer run for CTest: FUZZER ARTIFACTS SECONDS [libFuzzer flags] SEED_DIR...
# New corpus entries go to a temporary directory (removed on exit; it is the first corpus
# directory, the one libFuzzer writes), never into the seed directories; a crash, leak,
# timeout (> 10 s per input) or out-of-memory (> 2 GiB) input is kept in ARTIFACTS and fails
# the test.
set -eu
fuzzer=$1 artifacts=$2 seconds=$3
shift 3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$artifacts"
status=0
"$fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$artifacts/$(basename "$fuzzer")-" "$work" "$@" || status=$?
if [ "$status" -ne 0 ]; then
    echo "$(basename "$fuzzer"): finding saved in $artifacts/; reproduce: $fuzzer <that file>" >&2
fi
exit "$status"

# cli_lib.sh - what every CLI test script shares; source it after setting hx (the binary).
#   tmp     a scratch directory, removed at exit
#   n       checks made; fails: checks that failed
#   fail MSG             count a failure and say what it was
#   check WHAT CMD...    one check: CMD must succeed
#   finish [NAME]        the closing "N passed, N failed" line; exit status 0 only if none failed
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0 n=0

fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
check() {
  local what=$1; shift
  n=$((n + 1))
  "$@" || fail "$what"
}
finish() {
  echo "${1:+$1: }$((n - fails)) passed, $fails failed"
  [ "$fails" -eq 0 ]
}

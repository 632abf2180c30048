#!/usr/bin/env bash
# Install the distribution packages attn-harness needs, or say exactly how.
# As root: apt-get installs what is missing. Otherwise: prints the apt command and fails.
# Extra packages can be asked for in ATTN_EXTRA_PKGS (e.g. "hipcc libamdhip64-dev").
set -euo pipefail
pkgs=(cmake pkg-config libopenblas-dev libcriterion-dev libinih-dev gnuplot-nox)
read -r -a extra <<< "${ATTN_EXTRA_PKGS:-}"
pkgs+=("${extra[@]}")
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "deps: missing ${missing[*]}, and this is not a Debian/Ubuntu machine: install them by hand." >&2
  exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "deps: missing packages: ${missing[*]}" >&2
  echo "deps: run:  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

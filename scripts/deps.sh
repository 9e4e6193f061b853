#!/usr/bin/env bash
# Install what tweedie needs from Debian's archive, if missing (Debian 12, as root or with sudo).
set -euo pipefail
pkgs=(build-essential cmake ninja-build ccache libtorch-dev libopenblas0-pthread nlohmann-json3-dev libpng-dev zlib1g-dev libjpeg-dev libdnnl-dev
      libgtest-dev libbenchmark-dev dataset-fashion-mnist)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  echo "installing: ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

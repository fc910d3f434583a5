#!/bin/sh
# Install the Debian/Ubuntu packages emocam needs to build and open its window, if missing.
#   scripts/setup.sh && cargo run --release
# Checks each package with dpkg first and does nothing when all are there. Runs apt-get as
# root directly, or through sudo for a desktop user; refreshes the package lists once before
# installing (a fresh machine's lists may be empty).
#   libclang1-14: the camera crate's bindgen (build time)
#   libgl1 libegl1 libxkbcommon-x11-0 libxcursor1 libxrandr2 libxi6: the window
# Optional, not installed here: ffmpeg (videos other than H.264 MP4/MOV, and streams).
# A headless build (`cargo install --path . --no-default-features`) needs none of them.
set -eu

packages="libclang1-14 libgl1 libegl1 libxkbcommon-x11-0 libxcursor1 libxrandr2 libxi6"

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
  echo "setup: not a Debian-based system (no dpkg/apt-get); install the equivalents of:" >&2
  echo "  $packages" >&2
  exit 1
fi

missing=""
for pkg in $packages; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    missing="$missing $pkg"
  fi
done

if [ -z "$missing" ]; then
  echo "setup: all packages are installed ($packages); nothing to do"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  as_root=""
elif command -v sudo >/dev/null 2>&1; then
  as_root="sudo"
else
  echo "setup: missing:$missing; run this script as root (there is no sudo)" >&2
  exit 1
fi

echo "setup: installing$missing"
$as_root apt-get update -qq
# shellcheck disable=SC2086  # one word per package
$as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing
echo "setup: done"

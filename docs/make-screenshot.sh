#!/usr/bin/env bash
# Make docs/screenshot.png: the real emocam window on a built-in demo scene, drawn under a
# virtual X display (Xvfb) with Mesa's software OpenGL, so no screen or GPU is needed.
#
#   docs/make-screenshot.sh                 # builds and runs `cargo run --release`
#   EMOCAM=path/to/emocam docs/make-screenshot.sh
#
# Needs Xvfb (Debian: xvfb) and the window's libraries (scripts/setup.sh). Settings:
#   SCENE   demo scene (default demo:astronaut, one face: box, bars and a full chart; demo:solvay
#           and the cycling demo show several faces, the side panel then lists them without bars)
#   WAIT    seconds shown before the shot (default 15: the chart needs some history)
#   OUT     where the PNG goes, from the repository root (default docs/screenshot.png)
#   PYTHON  a Python with Pillow, to shrink the PNG when pngquant is missing (default python3)
set -euo pipefail
cd "$(dirname "$0")/.."

scene="${SCENE:-demo:astronaut}"
wait_s="${WAIT:-15}"
out="${OUT:-docs/screenshot.png}"
command -v Xvfb >/dev/null || { echo "make-screenshot: Xvfb is missing (apt-get install xvfb)" >&2; exit 1; }

# A free display number: the first with neither a lock file nor a socket.
display=90
while [ -e "/tmp/.X${display}-lock" ] || [ -e "/tmp/.X11-unix/X${display}" ]; do
  display=$((display + 1))
done
rec="$(mktemp -d)"   # recordings folder for the app, never used here
Xvfb ":$display" -screen 0 1280x800x24 -nolisten tcp >/dev/null 2>&1 &
xvfb=$!
trap 'kill "$xvfb" 2>/dev/null || true; rm -rf "$rec"' EXIT
sleep 1

if [ -n "${EMOCAM:-}" ]; then
  cmd=("$EMOCAM")
else
  cmd=(cargo run --release --quiet --)
fi
DISPLAY=":$display" LIBGL_ALWAYS_SOFTWARE=1 timeout 300 \
  "${cmd[@]}" --source "$scene" --quit-after "$wait_s" --screenshot "$out" --record-dir "$rec"

# Smaller file: a 256-colour palette (the window is flat colours; the photo survives it), with
# pngquant where installed, else Pillow in $PYTHON (default python3) where it imports; then a
# lossless optimiser where one is installed. Without any of them the PNG stays as the app wrote it.
python="${PYTHON:-python3}"
if command -v pngquant >/dev/null; then
  pngquant --force --skip-if-larger --output "$out" 256 -- "$out" || true
elif "$python" -c 'import PIL' 2>/dev/null; then
  "$python" - "$out" <<'PY'
import sys
from PIL import Image
path = sys.argv[1]
img = Image.open(path).convert("RGB")
img.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(path, optimize=True)
PY
fi
if command -v oxipng >/dev/null; then
  oxipng -q -o 4 --strip safe "$out"
elif command -v optipng >/dev/null; then
  optipng -quiet -o5 "$out"
fi
echo "wrote $out ($(stat -c %s "$out") bytes)"

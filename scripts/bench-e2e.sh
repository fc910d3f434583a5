#!/bin/sh
# End-to-end speed of `emocam run` (decode, detect, track, classify, CSV) on H.264 clips made
# here from assets/astronaut.png with ffmpeg: 640x360, 1280x720 and 1920x1080 with one moving
# face, 600 frames each, every frame processed (--fps 0); then the 640x360 clip with --annotate,
# and the 640x480 demo at 30 fps for its CPU use. Prints one line per case: frames per second,
# the share of frames in which a face was reported, faces per frame, and CPU (100% = one core).
#
# Usage: scripts/bench-e2e.sh   (EMOCAM=path/to/emocam to use another binary; default: the
# release build, built first)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${EMOCAM:-}" ]; then
  (cd "$root" && cargo build --release --quiet)
  EMOCAM="$root/target/release/emocam"
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ff="ffmpeg -nostdin -hide_banner -loglevel error -y"
photo="$root/assets/astronaut.png"

# clip W H FACE OUT: the photo scaled so that its face is about FACE px wide (the face is 96 px
# of the 512 px photo, centred at (224, 115)), its centre moving from 15% to 85% of a grey
# W x H canvas in 20 s at mid-height; High profile with B-frames.
clip() {
  s=$(( $3 * 512 / 96 ))
  x0=$(( $1 * 15 / 100 - 224 * s / 512 ))
  y=$(( $2 / 2 - 115 * s / 512 ))
  $ff -f lavfi -i "color=c=0x607080:s=$1x$2:r=30" -loop 1 -framerate 30 -i "$photo" \
    -filter_complex "[1]scale=$s:$s[f];[0][f]overlay=x='$x0+$1*0.7*t/20':y=$y:shortest=1,format=yuv420p" \
    -frames:v 600 -c:v libx264 -profile:v high -preset medium -crf 26 -bf 3 "$4"
}
clip 640 360 100 "$tmp/640x360.mp4"
clip 1280 720 120 "$tmp/1280x720.mp4"
clip 1920 1080 120 "$tmp/1920x1080.mp4"
# A group: the 1927 Solvay Conference photograph at 1280 px wide (28 faces the thorough search
# finds, 40-50 px each), held still for 10 s of video.
$ff -loop 1 -framerate 30 -i "$root/tests/fixtures/solvay_1927_scientists.jpg" \
  -vf "scale=1280:-2,format=yuv420p" -frames:v 300 -c:v libx264 -profile:v high -preset medium \
  -crf 26 "$tmp/solvay.mp4"

# case NAME ARGS...: one run, its JSON summary and its CPU share.
case_() {
  name=$1
  shift
  /usr/bin/time -f "%P" -o "$tmp/cpu" "$EMOCAM" run --json "$@" >"$tmp/summary" 2>/dev/null
  python3 - "$name" "$tmp/summary" "$(cat "$tmp/cpu")" <<'PY'
import json, sys
name, path, cpu = sys.argv[1:]
s = json.loads(open(path).read().splitlines()[-1])
share = 100.0 * s["frames_with_faces"] / max(s["frames"], 1)
print(f"{name:<28} {s['fps']:7.1f} fps  {s['frames']:4d} frames  faces in {share:5.1f}%  "
      f"{s['faces'] / max(s['frames'], 1):5.1f} a frame  dropped {s['dropped']}  CPU {cpu}")
PY
}
grep -m1 "model name" /proc/cpuinfo
case_ "640x360 H.264, one face" --source "$tmp/640x360.mp4" --fps 0
case_ "640x360 H.264, --annotate" --source "$tmp/640x360.mp4" --fps 0 --annotate "$tmp/a.mp4"
case_ "1280x720 H.264, one face" --source "$tmp/1280x720.mp4" --fps 0
case_ "1920x1080 H.264, one face" --source "$tmp/1920x1080.mp4" --fps 0
case_ "Solvay 1280 px, 28 faces" --source "$tmp/solvay.mp4" --fps 0
case_ "640x480 demo, unpaced" --source demo:astronaut --fps 0 --max-frames 600
case_ "640x480 demo at 30 fps" --source demo:astronaut --fps 30 --max-frames 600

#!/usr/bin/env python3
"""Frames per second of the Python `fer` package on the frame emocam's speed table uses.

The frame is the one `tests/pipeline.rs` builds: `tests/fixtures/astronaut.png` resized to
400x400 and placed at (120, 40) on a 640x480 grey (90) background: one frontal face.
`FER(mtcnn=False)` is fer's default: OpenCV's Haar cascade, then its TFLite mini-Xception.

    pip install fer opencv-python-headless pillow tensorflow   # or fer --no-deps plus these
    python3 docs/bench-fer.py [FRAMES [FRAME.png]]              # default 300, after 20 warm-up

With FRAME.png it also saves the frame, for emocam to run on the same pixels:

    emocam run --source FRAME.png --loop --fps 0 --max-frames 600 --detector live --json

On a machine where other work runs, `chrt -f 1 python3 docs/bench-fer.py` (as root) keeps it
out of the way; fer uses both cores (OpenCV's cascade runs in parallel), so `nice` is not enough.
"""
import os
import sys
import time

import cv2
import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from fer.fer import FER  # noqa: E402  (fer 25.x exports nothing from the package itself)

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
face = cv2.imread(os.path.join(root, "tests", "fixtures", "astronaut.png"))  # BGR, as fer expects
face = cv2.resize(face, (400, 400), interpolation=cv2.INTER_LINEAR)
frame = np.full((480, 640, 3), 90, dtype=np.uint8)
frame[40:440, 120:520] = face

frames = int(sys.argv[1]) if len(sys.argv) > 1 else 300
if len(sys.argv) > 2:
    cv2.imwrite(sys.argv[2], frame)
detector = FER(mtcnn=False)
for _ in range(20):
    found = detector.detect_emotions(frame)
print(f"faces found per frame: {len(found)}; top: {max(found[0]['emotions'], key=found[0]['emotions'].get) if found else '-'}")

wall0, cpu0 = time.perf_counter(), time.process_time()
for _ in range(frames):
    detector.detect_emotions(frame)
wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
print(f"{frames} frames in {wall:.2f} s: {frames / wall:.1f} frames/s, "
      f"{1000 * wall / frames:.1f} ms per frame, CPU {100 * cpu / wall:.0f}% of one core")

#!/usr/bin/env python3
"""Pack FER2013 class folders into the files train_teacher.py reads (standard library only).

    python3 pack_fer2013.py ../shared/data/fer2013 PACKDIR

writes PACKDIR/train.pack and PACKDIR/val.pack: per image `u8 class, u32 length (little
endian), JPEG bytes`, classes in emocam's order. One file per split travels to a GPU machine far
more easily than 32,000 small ones.
"""
import os
import struct
import sys

CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def main():
    root, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    for split in ("train", "val"):
        n = 0
        with open(os.path.join(out, f"{split}.pack"), "wb") as f:
            for label, name in enumerate(CLASSES):
                folder = os.path.join(root, split, name)
                for file in sorted(os.listdir(folder)):
                    with open(os.path.join(folder, file), "rb") as img:
                        data = img.read()
                    f.write(struct.pack("<BI", label, len(data)))
                    f.write(data)
                    n += 1
        print(f"{split}: {n} images")


if __name__ == "__main__":
    main()

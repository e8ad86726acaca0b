#!/usr/bin/env python3
"""Write a CIFAR-10-format data set of random images, for timing a search where the real one
cannot be downloaded (the lent GPU machine has no network).

The files are those of the official binary archive (cifar-10-batches-bin): data_batch_1.bin ..
data_batch_5.bin (the training images split evenly), test_batch.bin and batches.meta.txt (the
class names). Each record is 1 label byte (0..9) followed by 3,072 pixel bytes (32x32 red, then
green, then blue, each row-major). Labels are balanced (shuffled round-robin), pixels uniform
random; both depend only on --seed. Plain Python (no numpy): the full 60,000 images take a few
seconds.

    python3 tools/make_cifar10_like.py --out /tmp/cifar10              # 50,000 + 10,000
    python3 tools/make_cifar10_like.py --out /tmp/c10 --train 500 --test 100

Then `bayesnas search --dataset cifar10 --data-dir /tmp/cifar10 ...`. Accuracies on these images
mean nothing; they are for timing and for checking the loader.
"""
import argparse
import os
import random
import sys
import time

IMAGE_BYTES = 3 * 32 * 32
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]
TRAIN_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)]
TEST_FILE = "test_batch.bin"


def write_batch(path, count, rng):
    """Writes `count` records of a shuffled balanced label sequence and random pixels."""
    labels = [i % len(CLASSES) for i in range(count)]
    rng.shuffle(labels)
    pixels = rng.randbytes(count * IMAGE_BYTES)
    out = bytearray(count * (1 + IMAGE_BYTES))
    rec = 1 + IMAGE_BYTES
    for i, label in enumerate(labels):
        out[i * rec] = label
        out[i * rec + 1:(i + 1) * rec] = pixels[i * IMAGE_BYTES:(i + 1) * IMAGE_BYTES]
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(out)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="directory to write the files into")
    ap.add_argument("--train", type=int, default=50000,
                    help="training images, split evenly over the five batches (default 50000)")
    ap.add_argument("--test", type=int, default=10000, help="test images (default 10000)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.train < len(TRAIN_FILES) or a.train % len(TRAIN_FILES) or a.test < 1:
        sys.exit("--train must be a positive multiple of 5 and --test at least 1")
    t0 = time.perf_counter()
    os.makedirs(a.out, exist_ok=True)
    rng = random.Random(a.seed)
    per = a.train // len(TRAIN_FILES)
    for name in TRAIN_FILES:
        write_batch(os.path.join(a.out, name), per, rng)
    write_batch(os.path.join(a.out, TEST_FILE), a.test, rng)
    with open(os.path.join(a.out, "batches.meta.txt"), "w") as f:
        f.write("\n".join(CLASSES) + "\n\n")
    print(f"wrote {a.train} training and {a.test} test images (CIFAR-10 binary format) to "
          f"{a.out} in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()

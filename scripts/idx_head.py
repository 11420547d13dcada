"""Copies the first COUNT items of an IDX file (images or labels) to DEST,
with the count in its header changed to match: a smaller copy of a data
set that travels to a machine where the full one does not fit.

Usage: python scripts/idx_head.py SOURCE DEST COUNT
"""

import struct
import sys


def main(source, dest, count):
    with open(source, "rb") as f:
        magic, total = struct.unpack(">II", f.read(8))
        dims = magic & 0xFF  # the last magic byte: number of dimensions
        shape = struct.unpack(f">{dims - 1}I", f.read(4 * (dims - 1)))
        keep = min(count, total)
        item = 1
        for s in shape:
            item *= s
        body = f.read(keep * item)  # uint8 data: one byte per element
    with open(dest, "wb") as f:
        f.write(struct.pack(">II", magic, keep) + struct.pack(f">{dims - 1}I", *shape) + body)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))

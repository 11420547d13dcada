"""`make movielens`: the MovieLens ratings of R's dslabs package as a CSV.

Usage: python scripts/fetch_movielens.py PACKAGE_DIR OUT_CSV

PACKAGE_DIR is Debian's r-cran-dslabs 0.7.4 unpacked with `dpkg-deb -x`. Its
data sets live in R's lazy-load database (data/Rdata.rdx: a gzipped index of
name -> (offset, length); data/Rdata.rdb: per object, a 4-byte length and a
compressed R serialization), which the PyPI package rdata parses. Writes the
`movielens` data frame (100,004 ratings: 671 users, 9,066 movies) as
userId,movieId,rating,timestamp,year,genres (genres `|`-separated, year empty
when unknown), sorted by user, then time, then movie.
"""

import bz2
import csv
import gzip
import lzma
import os
import sys
import zlib

import rdata

package, out = sys.argv[1], sys.argv[2]
base = os.path.join(package, "usr/lib/R/site-library/dslabs/data/Rdata")


def unpack(chunk):
    """One object of the .rdb: a 4-byte length, then zlib data, or a
    one-byte tag ('Z' xz, '2' bzip2, '1' zlib) and that stream."""
    body = chunk[4:]
    tag = body[:1]
    if tag == b"Z":
        return lzma.decompress(body[1:])
    if tag == b"2":
        return bz2.decompress(body[1:])
    if tag == b"1":
        return zlib.decompress(body[1:])
    return zlib.decompress(body)


with open(base + ".rdx", "rb") as f:
    index = rdata.conversion.convert(rdata.parser.parse_data(gzip.decompress(f.read())))
offset, length = (int(v) for v in index["variables"]["movielens"])
with open(base + ".rdb", "rb") as f:
    f.seek(offset)
    frame = rdata.conversion.convert(rdata.parser.parse_data(unpack(f.read(length))))
assert frame.shape == (100004, 7), f"unexpected movielens shape {frame.shape}"
frame = frame.sort_values(["userId", "timestamp", "movieId"], kind="stable")
with open(out, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["userId", "movieId", "rating", "timestamp", "year", "genres"])
    for row in frame.itertuples(index=False):
        year = "" if row.year is None or str(row.year) == "<NA>" else int(row.year)
        w.writerow([int(row.userId), int(row.movieId), float(row.rating), int(row.timestamp), year, str(row.genres)])
print(f"wrote {out}: {len(frame)} ratings, {frame.userId.nunique()} users, {frame.movieId.nunique()} movies")

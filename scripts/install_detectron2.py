"""Install Detectron2 where it is not importable: the PyPI fallback, C++ extension disabled.

Detectron2 is not on PyPI under its own name. The source distribution
``pb1-detectron2==0.6`` (Detectron2 v0.6) is, but its archive lacks the C++ sources, and
its metadata names a direct-URL extra that ``pip download`` refuses. So this script fetches
the archive from the package index itself (PEP 503 simple API, ``PIP_INDEX_URL`` honoured),
checks its sha256, empties the extension list (``ext_modules=[]``) and installs it with
``--no-build-isolation`` against the torch already installed.
``motion_rcnn_d2/compat.py`` makes the extension-less build usable.

Usage: python scripts/install_detectron2.py   (a no-op where ``import detectron2`` works)
"""
import hashlib
import html.parser
import importlib.util
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request

PACKAGE, VERSION = "pb1-detectron2", "0.6"
ARCHIVE = f"{PACKAGE}-{VERSION}.tar.gz"


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.hrefs += [v for k, v in attrs if k == "href"]


def _find_archive(index):
    url = f"{index.rstrip('/')}/{PACKAGE}/"
    with urllib.request.urlopen(url, timeout=120) as r:
        page = r.read().decode()
    parser = _Links()
    parser.feed(page)
    for href in parser.hrefs:
        link = urllib.parse.urljoin(url, href)
        if urllib.parse.urlparse(link).path.endswith("/" + ARCHIVE):
            return link
    sys.exit(f"install_detectron2: {ARCHIVE} not found at {url}")


def main():
    if importlib.util.find_spec("detectron2") is not None:
        print("install_detectron2: detectron2 is importable; nothing to do")
        return
    import torch  # noqa: F401  (the build needs torch installed first)

    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple")
    link = _find_archive(index)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, ARCHIVE)
        print(f"install_detectron2: fetching {ARCHIVE}")
        with urllib.request.urlopen(link.split("#")[0], timeout=300) as r, open(path, "wb") as f:
            f.write(r.read())
        want = dict(urllib.parse.parse_qsl(urllib.parse.urlparse(link).fragment)).get("sha256")
        got = hashlib.sha256(open(path, "rb").read()).hexdigest()
        if want and want != got:
            sys.exit(f"install_detectron2: sha256 mismatch for {ARCHIVE}: {got} != {want}")
        with tarfile.open(path) as tar:
            tar.extractall(tmp, filter="data")
        src = os.path.join(tmp, f"{PACKAGE}-{VERSION}")
        setup_py = os.path.join(src, "setup.py")
        text = open(setup_py).read()
        patched, n = re.subn(r"ext_modules=get_extensions\(\),", "ext_modules=[],", text)
        if n != 1:
            sys.exit(f"install_detectron2: could not disable the C++ extension in {setup_py}")
        open(setup_py, "w").write(patched)
        subprocess.check_call(
            [sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", src]
        )
    print("install_detectron2: installed Detectron2 0.6 without its C++ extension")


if __name__ == "__main__":
    main()

"""Download a public data file with ``urllib`` and verify its size and checksum.

Used by the ``data_recipes`` scripts. The file is streamed to ``<dest>.part`` while its
MD5 and SHA-256 are computed, checked, and only then renamed to ``dest``: an interrupted or
corrupt download never leaves a file under the final name.
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.request
from pathlib import Path

from ..errors import DataError

_CHUNK = 1 << 20


def file_digests(path: str | Path) -> dict[str, str]:
    """{"md5": ..., "sha256": ...} hex digests of a file (read in 1 MiB chunks)."""
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            md5.update(chunk)
            sha.update(chunk)
    return {"md5": md5.hexdigest(), "sha256": sha.hexdigest()}


def verify_file(path: str | Path, md5: str | None = None, sha256: str | None = None,
                size: int | None = None) -> dict[str, str]:
    """Check a file's size and checksums; returns its digests.

    Raises:
        DataError naming the file, the expected and the actual value.
    """
    path = Path(path)
    if size is not None and path.stat().st_size != size:
        raise DataError(f"{path}: size {path.stat().st_size} bytes, expected {size}")
    digests = file_digests(path)
    for name, expected in (("md5", md5), ("sha256", sha256)):
        if expected is not None and digests[name] != expected.lower():
            raise DataError(f"{path}: {name} {digests[name]} does not match the published "
                            f"{expected}; the download is corrupt or the release changed")
    return digests


def download(url: str, dest: str | Path, md5: str | None = None, sha256: str | None = None,
             size: int | None = None, quiet: bool = False) -> Path:
    """Download ``url`` to ``dest`` unless ``dest`` already exists and verifies.

    Raises:
        DataError: network failure, size or checksum mismatch (the partial file is removed).
    """
    dest = Path(dest)
    if dest.is_file():
        verify_file(dest, md5, sha256, size)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as fh:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while chunk := response.read(_CHUNK):
                fh.write(chunk)
                done += len(chunk)
                if not quiet and total:
                    print(f"\r{dest.name}: {done / total:6.1%} of {total / 1e9:.2f} GB",
                          end="", file=sys.stderr)
        if not quiet:
            print(file=sys.stderr)
        verify_file(part, md5, sha256, size)
        os.replace(part, dest)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise DataError(f"download of {url} failed: {exc}") from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return dest


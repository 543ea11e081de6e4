"""How a reader knows that an append-only file is still the file it read before.

Transcripts and audit spool files are both read from a stored offset. That is only right
while the bytes before the offset are unchanged; a file that was replaced or rewritten
must be read again from the start. And which paths are read at all: plain files only.
"""

from __future__ import annotations

import hashlib
import os
import stat

FINGERPRINT_BYTES = 4096


def fingerprint(handle: int, offset: int) -> str:
    """A digest of the first bytes and of the bytes just before ``offset``: if either
    changed, the file was rewritten and must be read again from the start."""
    head = os.pread(handle, min(FINGERPRINT_BYTES, offset), 0)
    start = max(0, offset - FINGERPRINT_BYTES)
    tail = os.pread(handle, offset - start, start)
    return hashlib.blake2b(head + b"\0" + tail, digest_size=16).hexdigest() + f":{offset}"


def not_a_plain_file(info: os.stat_result) -> str | None:
    """Why a path (from ``os.lstat``) is not read, or None: a symlink is not followed (it
    could lead outside the data dir), and only regular files are read."""
    if stat.S_ISLNK(info.st_mode):
        return "symlink not followed"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    return None

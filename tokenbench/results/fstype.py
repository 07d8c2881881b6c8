"""Where a results store lives: the filesystem type of its directory, and whether it is a network one.

SQLite's WAL mode keeps its index in shared memory beside the file, which only processes on one host can share, and
its file locks are unreliable over network filesystems; so a store there must have a single writer. The type comes
from ``/proc/self/mounts`` (the longest mount point that holds the path); elsewhere it is unknown and taken as local.
"""

from __future__ import annotations

import os

#: filesystem types (as /proc/mounts names them) that are served over a network or shared between hosts
REMOTE = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "ceph", "glusterfs", "fuse.glusterfs",
                    "fuse.sshfs", "9p", "afs", "beegfs", "fuse.s3fs", "fuse.gcsfuse", "fuse.juicefs", "panfs",
                    "ocfs2", "gfs2", "orangefs", "wekafs", "virtiofs"})


def filesystem_type(path: str, mounts: str = "/proc/self/mounts") -> str:
    """The type of the filesystem holding ``path``, from the mount table ``mounts``; "" when it cannot be told."""
    path = os.path.realpath(path)
    best, kind = "", ""
    try:
        with open(mounts, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mount = parts[1].replace("\\040", " ")
                inside = path == mount or path.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best):
                    best, kind = mount, parts[2]
    except OSError:
        return ""
    return kind


def remote_type(path: str) -> str | None:
    """The network filesystem type holding ``path``, or None when it is local (or unknown)."""
    kind = filesystem_type(path)
    return kind if kind in REMOTE else None

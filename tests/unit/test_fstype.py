"""A results store on a network filesystem: told from the mount table, run with one writer, refused for a
data-parallel run with one line that says what to do instead."""

from __future__ import annotations

import sqlite3

import pytest
from click.testing import CliRunner

from tokenbench.cli import main
from tokenbench.results import fstype

MOUNTS = """overlay / overlay rw 0 0
server:/export /work/nfs nfs4 rw,relatime 0 0
//host/share /mnt/my\\040share cifs rw 0 0
/dev/sda1 /work/nfs/local ext4 rw 0 0
"""


@pytest.mark.parametrize("path, kind", [
    ("/work/nfs/runs/s.sqlite", "nfs4"),
    ("/work/nfs", "nfs4"),
    ("/work/nfsx/s.sqlite", "overlay"),  # a longer name is not inside the mount point
    ("/work/nfs/local/s.sqlite", "ext4"),  # the longest mount point holding the path wins
    ("/mnt/my share/s.sqlite", "cifs"),  # the mount table escapes spaces
])
def test_the_filesystem_is_told_from_the_mount_table(tmp_path, path, kind):
    (tmp_path / "mounts").write_text(MOUNTS)
    assert fstype.filesystem_type(path, str(tmp_path / "mounts")) == kind


def test_an_unreadable_mount_table_is_taken_as_local(tmp_path):
    assert fstype.filesystem_type("/x", str(tmp_path / "none")) == ""
    assert fstype.remote_type(str(tmp_path)) is None  # this machine's temporary directory is local


def test_a_store_on_a_network_filesystem_has_one_writer_and_refuses_processes(tmp_path, monkeypatch):
    monkeypatch.setattr(fstype, "filesystem_type", lambda path, mounts=None: "nfs4")
    store = str(tmp_path / "s.sqlite")
    args = ["compare", "fastv", "-M", "tiny-llava", "--limit", "2", "--repeats", "1", "--warmup", "0", "-q"]
    result = CliRunner().invoke(main, [*args, "--store", store, "--processes", "2"])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    line = result.output.strip()
    assert len(line.splitlines()) == 1 and "is on a network filesystem (nfs4)" in line
    assert "`--shard I/N`, then `tokenbench results merge`" in line
    result = CliRunner().invoke(main, [*args, "--store", store])  # one process: runs, as the store's only writer
    assert result.exit_code == 0, result.output
    from tokenbench.results.store import Store

    opened = Store(store)
    assert opened.remote == "nfs4"
    assert opened.db.execute("PRAGMA locking_mode").fetchone()[0] == "exclusive"
    with pytest.raises(sqlite3.OperationalError, match="locked"):  # a second connection cannot write beside it
        other = sqlite3.connect(store, timeout=0.1)
        other.execute("BEGIN IMMEDIATE")
    opened.close()

"""atomic_write leaves the old file or the new one; what a killed writer left behind is cleaned up."""

from __future__ import annotations

import pytest

from plugins.fileio import atomic_write, remove_stale_temporaries


def test_a_failed_write_keeps_the_old_content_and_no_temporary(tmp_path):
    target = tmp_path / "v1.pt"
    atomic_write(target, lambda s: s.write(b"old"))

    def crash(stream):
        stream.write(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(target, crash)
    assert target.read_bytes() == b"old" and list(tmp_path.glob(".*.tmp")) == []


def test_stale_temporaries_of_a_killed_writer_are_removed(tmp_path):
    (tmp_path / ".v2.pt.abc123.tmp").write_bytes(b"partial")  # what SIGKILL mid-write leaves
    (tmp_path / "v1.pt").write_bytes(b"keep")
    removed = remove_stale_temporaries(tmp_path)
    assert [p.name for p in removed] == [".v2.pt.abc123.tmp"]
    assert [p.name for p in tmp_path.iterdir()] == ["v1.pt"]
    assert remove_stale_temporaries(tmp_path / "missing") == []

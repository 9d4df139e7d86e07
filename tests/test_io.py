"""Atomic writes: content, cleanup on error, and the usual file permissions."""

import os
import stat

import pytest

from fastegnn_md.io import write_atomically


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_written_file_gets_usual_permissions(tmp_path, umask):
    before = os.umask(umask)
    try:
        path = write_atomically(tmp_path / "sub" / "out.bin", lambda h: h.write(b"abc"))
        plain = tmp_path / "plain.bin"
        plain.write_bytes(b"abc")  # what open() would give under the same umask
    finally:
        os.umask(before)
    assert path.read_bytes() == b"abc"
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask == stat.S_IMODE(plain.stat().st_mode)


def test_error_leaves_existing_file_and_no_temporary(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")

    def fail(handle):
        handle.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(path, fail)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]

"""The one atomic write: whole files only, links kept, and nothing but regular files replaced."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from sourceprep_models.errors import SourceprepError
from sourceprep_models.fs import write_atomic


def test_the_whole_text_lands_and_no_temp_file_is_left(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_text("old\n")
    text = "".join(f"line {number}\r\n" for number in range(50_000))  # line endings kept as given
    write_atomic(target, text)
    assert target.read_bytes() == text.encode()
    assert sorted(tmp_path.iterdir()) == [target]


def test_a_new_file_is_created_and_an_old_one_keeps_its_permissions(tmp_path: Path) -> None:
    fresh = tmp_path / "new.toml"
    write_atomic(fresh, "a = 1\n")
    assert fresh.read_text() == "a = 1\n"
    private = tmp_path / "private.toml"
    private.write_text("")
    private.chmod(0o600)
    write_atomic(private, "b = 2\n")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_text() == "b = 2\n"


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_a_symlink_stays_a_link_and_its_target_is_written(tmp_path: Path) -> None:
    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    real = dotfiles / "config.toml"
    real.write_text("old = true\n")
    link = tmp_path / "config.toml"
    link.symlink_to(real)
    write_atomic(link, "new = true\n")
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text() == "new = true\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["config.toml", "dotfiles"]
    assert sorted(path.name for path in dotfiles.iterdir()) == ["config.toml"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_is_refused_with_one_line_naming_it(tmp_path: Path) -> None:
    fifo = tmp_path / "report.json"
    os.mkfifo(fifo)
    with pytest.raises(SourceprepError) as caught:
        write_atomic(fifo, "{}\n")
    assert caught.value.message == f"{fifo}: is a FIFO, not a regular file; name a file to write instead"
    assert stat.S_ISFIFO(fifo.stat().st_mode)  # still the FIFO, not replaced
    assert sorted(tmp_path.iterdir()) == [fifo]


@pytest.mark.skipif(not Path("/dev/null").exists(), reason="no /dev/null")
def test_a_device_is_refused_even_through_a_link(tmp_path: Path) -> None:
    with pytest.raises(SourceprepError, match=r"^/dev/null: is a device, not a regular file"):
        write_atomic(Path("/dev/null"), "x")
    link = tmp_path / "out.json"
    link.symlink_to("/dev/null")
    with pytest.raises(SourceprepError) as caught:
        write_atomic(link, "x")
    assert caught.value.message.startswith(f"{link} (a link to /dev/null): is a device")
    assert "\n" not in caught.value.message


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SourceprepError, match=r": is a directory, not a regular file"):
        write_atomic(tmp_path, "x")
    assert list(tmp_path.iterdir()) == []

"""Folders opened without following links (mlxk.cache.nofollow), on real trees that someone else
shaped: links where folders belong, files where folders belong, FIFOs where files belong, paths
that climb out. Every refusal is checked together with its effect: what lies outside stays as it was.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from mlxk.cache.nofollow import Folder, LinkOnPath, open_path, opened, read_without_links

SECRET = b"not part of any cache"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder outside the tree under test, with a file in it that must survive everything."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.txt").write_bytes(SECRET)
    (folder / "inner").mkdir()
    (folder / "inner" / "deep.txt").write_bytes(SECRET)
    return folder


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "root"
    folder.mkdir()
    return folder


def outside_intact(outside: Path) -> bool:
    return (outside / "secret.txt").read_bytes() == SECRET and (
        outside / "inner" / "deep.txt"
    ).read_bytes() == SECRET


def test_the_root_is_missing_or_a_file(tmp_path: Path) -> None:
    assert Folder.open_root(str(tmp_path / "missing")) is None
    (tmp_path / "file").write_bytes(b"x")
    assert Folder.open_root(str(tmp_path / "file")) is None
    assert open_path(str(tmp_path / "missing"), "a") is None
    with opened(str(tmp_path / "file")) as folder:
        assert folder is None


def test_a_link_where_a_folder_belongs_is_refused_and_named(root: Path, outside: Path) -> None:
    (root / "a").mkdir()
    os.symlink(outside, root / "a" / "b")
    with pytest.raises(LinkOnPath) as refused:
        open_path(str(root), "a", "b", "inner")
    assert refused.value.path == os.path.join(str(root), "a", "b")
    assert refused.value.errno == errno.ELOOP
    with Folder.open_root(str(root)) as top, pytest.raises(LinkOnPath):  # type: ignore[union-attr]
        top.child("a").child("b")  # type: ignore[union-attr]


def test_a_file_where_a_folder_belongs_reads_as_missing(root: Path) -> None:
    (root / "a").write_bytes(b"a file")
    assert open_path(str(root), "a") is None
    assert open_path(str(root), "a", "b") is None
    with Folder.open_root(str(root)) as top:  # type: ignore[union-attr]
        assert top.child("a") is None
        with pytest.raises(NotADirectoryError):
            top.make_child("a")
        with top.make_child("new") as made, top.make_child("new") as again:  # a second creator is fine
            assert os.path.samestat(os.fstat(made.fd), os.fstat(again.fd))
    assert (root / "a").read_bytes() == b"a file"


def test_a_folder_opened_from_an_open_folder_outlives_it(root: Path) -> None:
    (root / "sub").mkdir()
    (root / "sub" / "f").write_bytes(b"1")
    top = Folder.open_root(str(root))
    assert top is not None
    same = open_path(top)
    sub = open_path(top, "sub")
    top.close()
    assert same is not None and sub is not None
    with same, sub:
        assert sorted(same.names()) == ["sub"]  # its own descriptor: still open
        assert sub.names() == ["f"]
    top.close()  # closing twice is harmless


def test_remove_takes_a_whole_tree_and_no_link_target(root: Path, outside: Path) -> None:
    victim = root / "victim"
    (victim / "x" / "y").mkdir(parents=True)
    (victim / "x" / "y" / "f").write_bytes(b"1")
    (victim / "g").write_bytes(b"2")
    os.symlink(outside, victim / "x" / "to-outside-folder")
    os.symlink(outside / "secret.txt", victim / "to-outside-file")
    os.symlink(outside, root / "top-link")
    (root / "plain").write_bytes(b"3")
    with Folder.open_root(str(root)) as top:  # type: ignore[union-attr]
        top.remove("victim")
        top.remove("top-link")  # a link goes, not what it leads to
        top.remove("plain")
        top.remove("never-there")  # nothing to do
    assert os.listdir(root) == []
    assert outside_intact(outside)


def test_unlink_at_goes_through_real_folders_only(root: Path, outside: Path) -> None:
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "file").write_bytes(b"1")
    os.symlink(outside / "secret.txt", root / "a" / "link")
    os.symlink(outside, root / "a" / "folder-link")
    with Folder.open_root(str(root)) as top:  # type: ignore[union-attr]
        with pytest.raises(LinkOnPath):  # the link would lead to outside/secret.txt
            top.unlink_at(["a", "folder-link", "secret.txt"])
        assert top.unlink_at(["a", "b"]) is False  # a folder is not unlinked
        assert top.unlink_at(["a", "missing"]) is False
        assert top.unlink_at(["missing", "file"]) is False
        assert top.unlink_at(["a", "link"]) is True  # the link itself
        assert top.unlink_at(["a", "file"]) is True
        assert top.rmdir_at(["a"]) is False  # not empty
        assert top.rmdir_at(["a", "b"]) is True
        assert top.rmdir_at(["a", "b"]) is False  # gone already
    assert sorted(os.listdir(root / "a")) == ["folder-link"]
    assert outside_intact(outside)


def test_read_without_links_reads_a_capped_regular_file(root: Path) -> None:
    (root / "refs" / "pr").mkdir(parents=True)
    (root / "refs" / "pr" / "1").write_bytes(b"0123456789")
    assert read_without_links(str(root), ["refs", "pr", "1"], 4) == b"0123"
    assert read_without_links(str(root), ["refs", "pr", "1"], 100) == b"0123456789"


@pytest.mark.parametrize("parts", [[], ["refs", ".."], ["..", "x"], ["refs", ""], ["a/b"], ["."]])
def test_read_without_links_refuses_paths_that_leave_the_folder(root: Path, parts: list[str]) -> None:
    with pytest.raises(OSError) as refused:
        read_without_links(str(root), parts, 10)
    assert refused.value.errno == errno.EINVAL


def test_read_without_links_refuses_links_anywhere(root: Path, outside: Path) -> None:
    (root / "refs").mkdir()
    os.symlink(outside / "secret.txt", root / "refs" / "main")
    os.symlink(outside, root / "linked")
    for parts in (["refs", "main"], ["linked", "secret.txt"]):
        with pytest.raises(OSError) as refused:
            read_without_links(str(root), parts, 100)
        assert refused.value.errno in (errno.ELOOP, errno.ENOTDIR), parts


def test_read_without_links_refuses_a_fifo_without_waiting_for_a_writer(root: Path) -> None:
    os.mkfifo(root / "main")
    (root / "folder").mkdir()
    for name in ("main", "folder"):
        with pytest.raises(OSError) as refused:
            read_without_links(str(root), [name], 100)
        assert refused.value.errno in (errno.EINVAL, errno.EISDIR), name

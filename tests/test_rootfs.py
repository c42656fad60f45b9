"""Mount targets are resolved inside the container's root, whatever its symlinks say: with
openat2(RESOLVE_IN_ROOT), and with the O_PATH walk pyctr uses on kernels without it."""

import os

import pytest

from pyctr.runtime import inroot


@pytest.fixture(params=["openat2", "walk"])
def resolver(request, monkeypatch):
    monkeypatch.setattr(inroot, "_openat2_works", None if request.param == "openat2" else False)
    return request.param


@pytest.fixture
def root(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "var").mkdir()
    (tmp_path / "etc").mkdir()
    (tmp_path / "file").write_text("")
    os.symlink("/run", tmp_path / "var" / "run")  # as in Alpine
    os.symlink("../../../../../etc", tmp_path / "climb")
    os.symlink("/etc/hosts", tmp_path / "hosts-link")
    os.symlink("loop-b", tmp_path / "loop-a")
    os.symlink("loop-a", tmp_path / "loop-b")
    os.symlink("/nowhere", tmp_path / "dangling")
    fd = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    yield tmp_path, fd
    os.close(fd)


def where(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


@pytest.mark.parametrize("path, inside", [
    ("/var/run", "run"),  # an absolute link starts again at the container's root
    ("/climb", "etc"),  # `..` stops at the root
    ("/../../etc", "etc"),
    ("/var/../run", "run"),
])
def test_symlinks_resolve_within_the_root(root, resolver, path, inside):
    folder, fd = root
    assert where(inroot.open_path(fd, path)) == str(folder / inside)


@pytest.mark.parametrize("path, made", [
    ("/var/run/data", "run/data"),
    ("/climb/new/deeper", "etc/new/deeper"),
    ("/hosts-link", "etc/hosts"),
    ("/new/dir", "new/dir"),
])
def test_missing_parts_are_created_within_the_root(root, resolver, path, made):
    folder, fd = root
    assert where(inroot.make_path(fd, path, directory=not path.endswith("hosts-link"))) == str(folder / made)
    assert (folder / made).exists()


def test_the_last_link_can_be_kept(root, resolver):
    folder, fd = root
    assert where(inroot.open_path(fd, "/hosts-link", follow_last=False)) == str(folder / "hosts-link")


def test_a_symlink_loop_is_an_error(root, resolver):
    with pytest.raises(OSError, match="(?i)symbolic links"):
        inroot.open_path(root[1], "/loop-a/x")
    with pytest.raises(OSError, match="(?i)symbolic links"):
        inroot.make_path(root[1], "/loop-a/x", directory=True)


def test_a_dangling_symlink_is_followed_within_the_root(root, resolver):
    folder, fd = root
    assert where(inroot.make_path(fd, "/dangling/x", directory=True)) == str(folder / "nowhere" / "x")
    assert not os.path.lexists("/nowhere")


def test_a_file_on_the_way_is_not_a_folder(root, resolver):
    with pytest.raises(OSError):
        inroot.make_path(root[1], "/file/x", directory=True)

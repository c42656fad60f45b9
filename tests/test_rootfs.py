"""Mount targets are resolved inside the container's root, whatever its symlinks say."""

import os

import pytest

from pyctr.runtime.rootfs import resolve_in_root


@pytest.fixture
def root(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "var").mkdir()
    os.symlink("/run", tmp_path / "var" / "run")  # as in Alpine
    os.symlink("../../../../../etc", tmp_path / "climb")
    os.symlink("/etc/hosts", tmp_path / "hosts-link")
    os.symlink("loop-b", tmp_path / "loop-a")
    os.symlink("loop-a", tmp_path / "loop-b")
    return str(tmp_path)


@pytest.mark.parametrize("path, inside", [
    ("/var/run/data", "run/data"),  # an absolute link starts again at the container's root
    ("/climb/passwd", "etc/passwd"),  # `..` stops at the root
    ("/../../etc/shadow", "etc/shadow"),
    ("/hosts-link", "etc/hosts"),
    ("/new/dir", "new/dir"),
])
def test_symlinks_resolve_within_the_root(root, path, inside):
    assert resolve_in_root(root, path) == os.path.join(root, inside)


def test_the_last_link_can_be_kept(root):
    assert resolve_in_root(root, "/hosts-link", follow_last=False) == os.path.join(root, "hosts-link")


def test_a_symlink_loop_is_an_error(root):
    from pyctr.runtime.errors import PyctrError

    with pytest.raises(PyctrError, match="symbolic links"):
        resolve_in_root(root, "/loop-a/x")

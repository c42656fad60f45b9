"""User namespaces for real: maps written to a child's /proc, idmapped and chowned rootfs seen from
inside, overlay on an idmapped lower layer, and the subuid/auto range choices on temporary files.

Every mount is made in a forked child that first unshares its own mount namespace (and makes it
private), so none can reach the host's mount table: they end with the child. Files the remapped
root writes go to a workspace under /tmp that the test removes.
"""

import errno
import json
import os
import select
import signal
import socket
import stat
import struct
import shutil
import tempfile
import traceback
from pathlib import Path

import pytest

from conftest import needs_userns

from pyctr.runtime import userns
from pyctr.runtime.errors import PyctrError
from pyctr.runtime.syscalls import (CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID, MNT_DETACH, MS_BIND,
                                    MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_REC, mount, pivot_root,
                                    setns, umount2, unshare)
from pyctr.runtime.userns import IdMap

UIDS = [IdMap(0, 100000, 65536)]
GIDS = [IdMap(0, 200000, 65536)]  # another base than the uids', so a mix-up shows


def forked(child, parent=None, timeout: float = 30):
    """Run child() in a forked process and return what it returns (JSON); parent(pid), if given,
    runs meanwhile. The child's exception comes back as the test's failure; a child that hangs
    is killed."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            try:
                outcome = {"result": child()}
            except BaseException:
                outcome = {"error": traceback.format_exc()}
            os.write(write_end, json.dumps(outcome).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        if parent:
            parent(pid)
        data = b""
        while True:
            ready, _, _ = select.select([read_end], [], [], timeout)
            if not ready:
                raise TimeoutError("the child hung")
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(read_end)
        try:
            if os.waitpid(pid, os.WNOHANG) == (0, 0):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    outcome = json.loads(data or b'{"error": "the child died without a word"}')
    if "error" in outcome:
        pytest.fail(f"in the child:\n{outcome['error']}")
    return outcome["result"]


def private_mount_namespace() -> None:
    unshare(CLONE_NEWNS)
    mount(None, "/", None, MS_REC | MS_PRIVATE)


def mapped_child(body, uid_maps=UIDS, gid_maps=GIDS, hand_over=None, before=None):
    """before(), then body(fds) in a child that has unshared a user and a mount namespace, mapped by the parent
    (the handshake the container init uses), as root inside. hand_over(userns_fd) -> fds the
    parent passes to the child after writing the maps."""
    sync = userns.UsernsSync()

    def child():
        if before:
            before()
        fds = sync.enter(CLONE_NEWNS)
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        return body(fds)

    def parent(pid):
        sync.wait_unshared()
        fds = []
        try:
            userns.write_mappings(pid, uid_maps, gid_maps)
            if hand_over:
                with open(f"/proc/{pid}/ns/user") as ns:
                    fds = hand_over(ns.fileno())
            sync.proceed(fds)
        except BaseException as e:
            sync.fail(str(e))
            raise
        finally:
            for fd in fds:
                os.close(fd)

    return forked(child, parent)


@pytest.fixture
def workspace():
    """A folder the remapped root can reach by path (as Docker's 0711 /var/lib/docker), unlike
    tmp_path under root's 0700 /tmp/pytest-of-root."""
    folder = Path(tempfile.mkdtemp(prefix="pyctr-userns-", dir="/tmp"))
    os.chmod(folder, 0o711)
    yield folder
    shutil.rmtree(folder)


@pytest.fixture(scope="session")
def alpine_rootfs(pyctr_root) -> Path:
    found = sorted((pyctr_root / "images" / "alpine").glob("*/rootfs"))
    assert found, "pyctr pull alpine made no rootfs"
    return found[0]


# -- maps ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("entries, words", [
    ([], "no mappings"),
    ([{"containerID": 0, "hostID": 1000}], "[0]: needs containerID, hostID and size"),
    ([{"containerID": "0", "hostID": 1000, "size": 1}], "must be integers"),
    ([{"containerID": 0, "hostID": 1000, "size": 0}], "size >= 1"),
    ([{"containerID": 0, "hostID": 2**32 - 2, "size": 2}], "past the largest id"),
    ([{"containerID": 0, "hostID": 1000, "size": 10}, {"containerID": 5, "hostID": 5000, "size": 1}],
     "overlap in their container ids"),
    ([{"containerID": 0, "hostID": 1000, "size": 10}, {"containerID": 10, "hostID": 1009, "size": 1}],
     "overlap in their host ids"),
    ([{"containerID": i, "hostID": 1000 + i, "size": 1} for i in range(341)], "at most 340"),
])
def test_bad_maps_are_refused_in_one_line_naming_the_field(entries, words):
    with pytest.raises(PyctrError) as caught:
        userns.maps_from_spec(entries, userns.GID_FIELD)
    message = str(caught.value)
    assert message.startswith("linux.gidMappings") and words in message and "\n" not in message


def test_spec_maps_round_trip_and_translate():
    maps = userns.maps_from_spec([{"containerID": 0, "hostID": 100000, "size": 1000},
                                  {"containerID": 1000, "hostID": 300000, "size": 10}])
    assert [m.to_spec() for m in maps][1] == {"containerID": 1000, "hostID": 300000, "size": 10}
    assert (userns.host_id(maps, 0), userns.host_id(maps, 999), userns.host_id(maps, 1005),
            userns.host_id(maps, 1010)) == (100000, 100999, 300005, None)


# -- the handshake ---------------------------------------------------------------------------------


@needs_userns
def test_child_in_a_new_user_namespace_is_root_and_its_files_belong_to_the_mapped_host_ids(workspace):
    shared = workspace / "shared"
    shared.mkdir()
    os.chown(shared, 100000, 200000)  # the container's root owns it
    host_ns = {ns: os.readlink(f"/proc/self/ns/{ns}") for ns in ("user", "mnt")}

    def body(fds):
        (shared / "made-inside").write_text("hi")
        return {"ids": [os.getresuid(), os.getresgid(), os.getgroups()],
                "uid_map": Path("/proc/self/uid_map").read_text().split(),
                "gid_map": Path("/proc/self/gid_map").read_text().split(),
                "setgroups": Path("/proc/self/setgroups").read_text().strip(),
                "ns": {ns: os.readlink(f"/proc/self/ns/{ns}") for ns in ("user", "mnt")},
                "owner_inside": [os.stat(shared / "made-inside").st_uid, os.stat(shared).st_gid]}

    seen = mapped_child(body, before=lambda: os.setgroups([0, 4]))  # host groups, to be dropped
    assert seen["ids"] == [[0, 0, 0], [0, 0, 0], []]
    assert seen["uid_map"] == ["0", "100000", "65536"] and seen["gid_map"] == ["0", "200000", "65536"]
    assert seen["setgroups"] == "allow"  # root wrote the maps: no need to deny
    assert all(seen["ns"][ns] != host_ns[ns] for ns in host_ns)
    assert seen["owner_inside"] == [0, 0]
    made = os.stat(shared / "made-inside")
    assert (made.st_uid, made.st_gid) == (100000, 200000)


@needs_userns
def test_a_map_written_twice_is_refused_by_the_kernel_naming_the_field():
    sync = userns.UsernsSync()
    errors = []

    def parent(pid):
        sync.wait_unshared()
        userns.write_mappings(pid, UIDS, GIDS)
        try:
            userns.write_mappings(pid, UIDS, GIDS)
        except PyctrError as e:
            errors.append(str(e))
        sync.proceed()

    forked(lambda: sync.enter() and None, parent)
    assert len(errors) == 1 and errors[0].startswith("linux.uidMappings: writing '0 100000 65536'")
    assert "already written" in errors[0]


@needs_userns
def test_a_child_whose_maps_fail_is_told_and_exits():
    sync = userns.UsernsSync()

    def child():
        try:
            sync.enter()
        except PyctrError as e:
            return str(e)
        return "entered"

    def parent(pid):
        sync.wait_unshared()
        sync.fail("linux.uidMappings: nope")

    assert forked(child, parent) == "linux.uidMappings: nope"


@needs_userns
def test_become_root_needs_container_id_0_mapped():
    def body(fds):
        try:
            userns.become_root()
        except PyctrError as e:
            return str(e)

    sync = userns.UsernsSync()

    def child():
        sync.enter(as_root=False)
        return body([])

    def parent(pid):
        sync.wait_unshared()
        userns.write_mappings(pid, [IdMap(1, 100000, 10)], [IdMap(0, 200000, 10)])
        sync.proceed()

    assert forked(child, parent) == "linux.uidMappings: container id 0 is not mapped"


@needs_userns
def test_what_the_root_of_a_user_namespace_may_mount(workspace):
    """Facts the container init builds on: with the user namespace made first, the namespaces made
    with or after it are its own, and so are the filesystems that need them."""
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC

    def attempt(call) -> str:
        try:
            call()
            return "ok"
        except OSError as e:
            return errno.errorcode[e.errno]

    def body(fds):
        w = str(workspace)
        mount("tmpfs", w, "tmpfs", 0, "mode=755")
        for name in ("dev", "sys", "mq", "proc"):
            os.mkdir(f"{w}/{name}")
        Path(w, "null").touch()
        seen = {
            "mknod": attempt(lambda: os.mknod(f"{w}/dev/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))),
            "bind /dev/null": attempt(lambda: mount("/dev/null", f"{w}/null", None, MS_BIND)),
            "sysfs, host netns": attempt(lambda: mount("sysfs", f"{w}/sys", "sysfs", flags)),
            "mqueue, host ipc ns": attempt(lambda: mount("mqueue", f"{w}/mq", "mqueue", flags)),
            "proc, host pid ns": attempt(lambda: mount("proc", f"{w}/proc", "proc", flags)),
            "umount an inherited mount": attempt(lambda: umount2("/proc")),
        }
        unshare(CLONE_NEWNET | CLONE_NEWIPC)  # an empty netns of its own: the host's is untouched
        seen["sysfs, own netns"] = attempt(lambda: mount("sysfs", f"{w}/sys", "sysfs", flags))
        seen["mqueue, own ipc ns"] = attempt(lambda: mount("mqueue", f"{w}/mq", "mqueue", flags))
        seen["proc, pid 1 of own pid ns"] = forked(
            lambda: [os.getpid(), attempt(lambda: mount("proc", f"{w}/proc", "proc", flags))])
        return seen

    sync = userns.UsernsSync()

    def child():
        sync.enter(CLONE_NEWNS | CLONE_NEWPID)
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        return body([])

    def parent(pid):
        sync.wait_unshared()
        userns.write_mappings(pid, UIDS, GIDS)
        sync.proceed()

    assert forked(child, parent) == {
        "mknod": "EPERM", "bind /dev/null": "ok",
        "sysfs, host netns": "EPERM", "mqueue, host ipc ns": "EPERM", "proc, host pid ns": "EPERM",
        "umount an inherited mount": "EINVAL",  # locked: it came from a more privileged namespace
        "sysfs, own netns": "ok", "mqueue, own ipc ns": "ok", "proc, pid 1 of own pid ns": [1, "ok"]}


# -- idmapped mounts -------------------------------------------------------------------------------


@needs_userns
def test_support_for_idmapped_mounts_is_probed_per_filesystem(tmp_path, monkeypatch):
    monkeypatch.setattr(userns, "_idmap_support", {})
    assert userns.supports_idmapped_mounts(str(tmp_path))  # ext4 on Linux 6.x
    assert not userns.supports_idmapped_mounts("/proc")  # procfs cannot be idmapped
    assert set(userns._idmap_support) == {os.stat(tmp_path).st_dev, os.stat("/proc").st_dev}
    monkeypatch.setattr(userns, "_probe_idmap", None)  # a second probe would fail
    assert userns.supports_idmapped_mounts(str(tmp_path.parent))  # same filesystem: the answer kept


@needs_userns
def test_an_idmapped_bind_shows_host_root_files_as_the_mapped_ids(alpine_rootfs, workspace):
    target = workspace / "target"
    target.mkdir()

    def child():
        private_mount_namespace()
        userns_fd = userns.open_userns(UIDS, GIDS)
        try:
            userns.idmapped_bind(str(alpine_rootfs), str(target), userns_fd)
        finally:
            os.close(userns_fd)
        passwd, shadow = os.stat(target / "etc/passwd"), os.stat(target / "etc/shadow")
        return [passwd.st_uid, passwd.st_gid, shadow.st_gid]

    assert forked(child) == [100000, 200000, 200042]  # shadow's group is 42 in Alpine
    assert os.stat(alpine_rootfs / "etc/passwd").st_uid == 0  # the image itself is untouched
    assert not os.path.ismount(target)


@needs_userns
def test_overlay_on_an_idmapped_lower_layer_inside_the_user_namespace(alpine_rootfs, workspace):
    """The container init's order: the parent maps the child, makes the idmapped rootfs from the
    child's namespace and hands it over; the child, root inside, attaches it and mounts overlay."""
    lower, upper, work, merged = (workspace / name for name in ("lower", "upper", "work", "merged"))
    for folder in (lower, upper, work, merged):
        folder.mkdir()
    for folder in (upper, work):  # written by the container's root
        os.chown(folder, 100000, 200000)

    def hand_over(userns_fd):
        return [userns.idmapped_tree(str(alpine_rootfs), userns_fd)]

    def body(fds):
        assert os.get_inheritable(fds[0]) is False
        userns.attach_tree(fds[0], str(lower))
        mount("overlay", str(merged), "overlay", 0, f"lowerdir={lower},upperdir={upper},workdir={work}")
        passwd = os.stat(merged / "etc/passwd")
        (merged / "made-inside").write_text("hi")
        with open(merged / "etc/motd", "a") as f:  # a copy-up from the idmapped lower
            f.write("changed inside\n")
        os.mkdir(merged / "root/dir")
        return {"passwd": [passwd.st_uid, passwd.st_gid], "shadow_gid": os.stat(merged / "etc/shadow").st_gid,
                "new": [os.stat(merged / "made-inside").st_uid]}

    seen = mapped_child(body, hand_over=hand_over)
    assert seen == {"passwd": [0, 0], "shadow_gid": 42, "new": [0]}
    for name in ("made-inside", "etc/motd", "root/dir"):
        st = os.stat(upper / name)
        assert (name, st.st_uid, st.st_gid) == (name, 100000, 200000)
    assert os.stat(upper / "etc").st_uid == 100000  # copied up: the lower's root-owned /etc, mapped
    assert os.stat(alpine_rootfs / "etc/motd").st_uid == 0
    assert b"changed inside" not in (alpine_rootfs / "etc/motd").read_bytes()
    assert not any(os.path.ismount(p) for p in (lower, merged))


@needs_userns
def test_host_root_can_build_the_rootfs_in_the_container_mount_namespace(alpine_rootfs, tmp_path):
    """With pyctr's store (0700, root's), the container's root cannot walk the host paths
    (tmp_path's parents are 0700 too). A host-root helper enters the container's mount namespace,
    mounts the idmapped lower and the overlay there by path, and hands over the merged folder's fd:
    the container's root fchdir()s to it and pivots."""
    lower, upper, work, merged = (tmp_path / name for name in ("lower", "upper", "work", "merged"))
    for folder in (lower, upper, work, merged):
        folder.mkdir()
    for folder in (upper, work):
        os.chown(folder, 100000, 200000)
    handed, received = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sync = userns.UsernsSync()

    def container():
        sync.enter(CLONE_NEWNS)
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        by_path = os.access(merged, os.F_OK)
        _, fds, _, _ = socket.recv_fds(received, 16, 1)
        os.fchdir(fds[0])
        pivot_root(".", ".")
        umount2(".", MNT_DETACH)
        Path("/made-inside").write_text("hi")
        return {"by_path": by_path, "passwd_uid": os.stat("/etc/passwd").st_uid,
                "release": Path("/etc/alpine-release").exists()}

    def builder(container_pid):
        with open(f"/proc/{container_pid}/ns/mnt") as mnt_ns:
            setns(mnt_ns.fileno(), CLONE_NEWNS)
        with open(f"/proc/{container_pid}/ns/user") as user_ns:
            userns.idmapped_bind(str(alpine_rootfs), str(lower), user_ns.fileno())
        mount("overlay", str(merged), "overlay", 0, f"lowerdir={lower},upperdir={upper},workdir={work}")
        root_fd = os.open(merged, os.O_RDONLY | os.O_DIRECTORY)
        socket.send_fds(handed, [b"root"], [root_fd])

    def parent(pid):
        sync.wait_unshared()
        userns.write_mappings(pid, UIDS, GIDS)
        sync.proceed()
        forked(lambda: builder(pid))

    seen = forked(container, parent)
    assert seen == {"by_path": False, "passwd_uid": 0, "release": True}
    assert os.stat(upper / "made-inside").st_uid == 100000
    assert not any(os.path.ismount(p) for p in (lower, merged))


# -- chowned copies --------------------------------------------------------------------------------


@needs_userns
def test_a_chowned_copy_of_the_rootfs_is_root_owned_inside_and_made_once(alpine_rootfs, workspace):
    dest = userns.chowned_copy_path(str(workspace / "rootfs"), 100000, 200000)
    assert dest.name == "rootfs-100000.200000"
    made = userns.chowned_copy(str(alpine_rootfs), str(dest), 100000, 200000)
    assert made == dest
    passwd = os.stat(dest / "etc/passwd")
    assert (passwd.st_uid, passwd.st_gid, os.stat(dest / "etc/shadow").st_gid) == (100000, 200000, 200042)
    assert os.lstat(dest / "bin/sh").st_uid == 100000  # a symlink, itself shifted
    assert os.stat(alpine_rootfs / "etc/passwd").st_uid == 0

    inode = os.stat(dest / "etc/passwd").st_ino
    assert userns.chowned_copy(str(alpine_rootfs), str(dest), 100000, 200000) == dest
    assert os.stat(dest / "etc/passwd").st_ino == inode  # not copied again
    assert sorted(p.name for p in workspace.iterdir()) == ["rootfs-100000.200000"]  # no leftovers

    def body(fds):
        st = os.stat(dest / "etc/passwd")
        return [st.st_uid, st.st_gid, os.stat(dest / "etc/shadow").st_gid, os.access(dest / "etc", os.W_OK)]

    assert mapped_child(body) == [0, 0, 42, True]


@needs_userns
def test_a_chowned_copy_keeps_special_bits_links_devices_xattrs_and_capabilities(workspace):
    source = workspace / "source"
    source.mkdir()
    (source / "suid").write_text("x")
    os.chmod(source / "suid", 0o4755)
    (source / "sgid-dir").mkdir()
    os.chmod(source / "sgid-dir", 0o2775)
    (source / "user-file").write_text("x")
    os.chown(source / "user-file", 1000, 1001)
    os.link(source / "user-file", source / "hard-link")
    os.mknod(source / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mkfifo(source / "fifo")
    os.symlink("/nowhere", source / "dangling")
    os.setxattr(source / "user-file", "user.note", b"kept")
    (source / "ping").write_text("x")
    net_raw = 1 << 13
    os.setxattr(source / "ping", "security.capability", struct.pack("<5I", 0x02000001, net_raw, 0, 0, 0))

    dest = userns.chowned_copy(str(source), str(workspace / "copy"), 100000, 200000)

    def owner(name):
        st = os.lstat(dest / name)
        return st.st_uid, st.st_gid

    assert stat.S_IMODE(os.stat(dest / "suid").st_mode) == 0o4755 and owner("suid") == (100000, 200000)
    assert stat.S_IMODE(os.stat(dest / "sgid-dir").st_mode) == 0o2775
    assert owner("user-file") == (101000, 201001)  # shifted once, though two names reach it
    assert os.stat(dest / "hard-link").st_ino == os.stat(dest / "user-file").st_ino
    assert os.stat(dest / "null").st_rdev == os.makedev(1, 3) and stat.S_ISCHR(os.stat(dest / "null").st_mode)
    assert stat.S_ISFIFO(os.stat(dest / "fifo").st_mode)
    assert os.readlink(dest / "dangling") == "/nowhere" and owner("dangling") == (100000, 200000)
    assert os.getxattr(dest / "user-file", "user.note") == b"kept"
    magic, permitted, _, _, _, root = struct.unpack("<6I", os.getxattr(dest / "ping", "security.capability"))
    assert (magic, permitted, root) == (0x03000001, net_raw, 100000)  # v3, for the container's root

    def body(fds):  # inside, the kernel shows the capability as the namespace root's own (v2)
        return len(os.getxattr(dest / "ping", "security.capability"))

    assert mapped_child(body) == 20


# -- choosing the maps -----------------------------------------------------------------------------


def test_remap_from_subid_reads_the_ranges_of_user_and_group(tmp_path):
    (tmp_path / "subuid").write_text("alice:100000:65536\nbob:165536:1000\nbob:300000:5\n")
    (tmp_path / "subgid").write_text("staff:400000:2000\n")
    uids, gids = userns.remap_from_subid("bob", "staff", subuid_path=str(tmp_path / "subuid"),
                                         subgid_path=str(tmp_path / "subgid"))
    assert uids == [IdMap(0, 165536, 1000), IdMap(1000, 300000, 5)]
    assert gids == [IdMap(0, 400000, 2000)]
    with pytest.raises(PyctrError) as caught:
        userns.remap_from_subid("bob", subuid_path=str(tmp_path / "subuid"), subgid_path=str(tmp_path / "subgid"))
    assert str(caught.value) == (f"no subordinate gids for 'bob' in {tmp_path / 'subgid'} "
                                 "(add a line bob:START:COUNT)")


@pytest.fixture
def etc_root(tmp_path):
    """A copy of this machine's user database, for useradd/usermod --prefix."""
    (tmp_path / "etc").mkdir()
    for name in ("passwd", "group", "shadow", "gshadow"):
        shutil.copy2(f"/etc/{name}", tmp_path / "etc" / name)
    (tmp_path / "etc/subuid").write_text("alice:100000:65536\n")
    return tmp_path


def test_userns_remap_default_creates_dockremap_after_the_ranges_in_use(etc_root):
    real = [Path(f"/etc/{name}").read_bytes() if Path(f"/etc/{name}").exists() else None
            for name in ("passwd", "group", "subuid", "subgid")]
    uids, gids = userns.userns_remap("default", root=str(etc_root))
    assert uids == [IdMap(0, 165536, 65536)] and gids == [IdMap(0, 100000, 65536)]
    assert any(line.startswith("dockremap:") for line in (etc_root / "etc/passwd").read_text().splitlines())
    assert any(line.startswith("dockremap:") for line in (etc_root / "etc/group").read_text().splitlines())
    assert userns.userns_remap("default", root=str(etc_root)) == (uids, gids)  # once only
    assert (etc_root / "etc/subuid").read_text().count("dockremap") == 1
    assert real == [Path(f"/etc/{name}").read_bytes() if Path(f"/etc/{name}").exists() else None
                    for name in ("passwd", "group", "subuid", "subgid")]


def test_userns_remap_user_and_group(etc_root):
    (etc_root / "etc/subgid").write_text("wheel:500000:100\n")
    assert userns.userns_remap("alice:wheel", root=str(etc_root)) == (
        [IdMap(0, 100000, 65536)], [IdMap(0, 500000, 100)])
    with pytest.raises(PyctrError, match=r"^no subordinate uids for 'carol' in .*subuid"):
        userns.userns_remap("carol", root=str(etc_root))


@pytest.fixture
def auto_pool(tmp_path):
    (tmp_path / "subuid").write_text("containers:200000:200000\n")
    (tmp_path / "subgid").write_text("other:1:1\ncontainers:1000000:300000\n")
    paths = {name: str(tmp_path / name) for name in ("subuid", "subgid")}
    return dict(subuid_path=paths["subuid"], subgid_path=paths["subgid"],
                state_path=str(tmp_path / "userns-auto.json"), lock_path=str(tmp_path / "userns-auto.lock"))


def test_auto_ranges_are_free_ranges_of_the_containers_pool(auto_pool):
    a = userns.auto_range("a", **auto_pool)
    b = userns.auto_range("b", **auto_pool)
    assert a == ([IdMap(0, 200000, 65536)], [IdMap(0, 1000000, 65536)])
    assert b == ([IdMap(0, 265536, 65536)], [IdMap(0, 1065536, 65536)])
    assert userns.auto_range("a", **auto_pool) == a  # the same owner keeps its range
    assert userns.auto_range("c", **auto_pool)[0] == [IdMap(0, 331072, 65536)]
    with pytest.raises(PyctrError, match=r"^--userns=auto: no free range of 65536 ids left for 'containers'"):
        userns.auto_range("d", **auto_pool)
    assert userns.auto_range("small", 1000, **auto_pool)[0] == [IdMap(0, 396608, 1000)]
    userns.release_auto_range("b", state_path=auto_pool["state_path"], lock_path=auto_pool["lock_path"])
    assert userns.auto_range("d", **auto_pool) == b  # b's range is free again


def test_auto_ranges_need_a_containers_entry(auto_pool, tmp_path):
    (tmp_path / "subuid").write_text("alice:100000:65536\n")
    with pytest.raises(PyctrError) as caught:
        userns.auto_range("a", **auto_pool)
    assert str(caught.value) == (f"--userns=auto: no ranges for user 'containers' in {tmp_path / 'subuid'} "
                                 "(as podman: add a line containers:START:COUNT)")


def test_auto_ranges_taken_at_once_do_not_overlap(auto_pool):
    pids = []
    for i in range(4):
        pid = os.fork()
        if pid == 0:
            try:
                userns.auto_range(f"c{i}", 10000, **auto_pool)
            finally:
                os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    taken = json.loads(Path(auto_pool["state_path"]).read_text())
    starts = sorted(entry["uid"] for entry in taken.values())
    assert len(taken) == 4 and starts == [200000, 210000, 220000, 230000]

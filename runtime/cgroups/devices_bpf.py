"""cgroup v2 device access: the OCI `linux.resources.devices` list as an eBPF program of type
BPF_PROG_TYPE_CGROUP_DEVICE attached to the container's cgroup, as runc and crun do (v2 has no
devices controller; the kernel asks every such program on the cgroup's path, then v1's, if any).

The list means what it means to cgroup v1's devices.allow / devices.deny, written in order onto
a fresh cgroup (which allows everything). `reduce` replays it as the v1 kernel would:
  - an "a" rule resets: allow a -> allow everything, deny a -> deny everything (no exceptions);
  - a rule of the other kind than the default adds an exception (the access of one exact
    type, major, minor add up);
  - a rule of the default's kind takes access out of the exception with exactly its type,
    major and minor. v1 silently keeps access that a wider exception ("c 1:* rw") grants;
    that rule is refused instead, as runc refuses it, rather than leave the hole unseen.
and the kernel's check on an access request (type, major, minor, access bits):
  - default deny: allowed when one exception matches type, major, minor and holds all the bits;
  - default allow: denied when an exception matches type, major, minor and shares any bit.
`assemble` writes that as eBPF, by hand: the context struct bpf_cgroup_dev_ctx is
{u32 access_type (low 16 bits: BPF_DEVCG_DEV_*, high 16: BPF_DEVCG_ACC_*), u32 major, u32 minor};

    r2 = type, r3 = access, r4 = major, r5 = minor
    for each exception:   (a failed test jumps to the next exception)
        if r2 != TYPE goto next
        w1 = w3 & ACCESS; if w1 != w3 goto next   (default deny: all the bits; left out for rwm)
                          if w1 == 0  goto next   (default allow: any bit; left out for rwm)
        if r4 != MAJOR goto next                  (left out for *)
        if r5 != MINOR goto next                  (left out for *)
        return not DEFAULT
    return DEFAULT

An update's list is replayed from a fresh cgroup too (v1 would layer it on the current state); the
lists of OCI configs begin with "deny all", which resets either way.

`install` loads it, attaches it (BPF_F_ALLOW_MULTI, as runc: other programs, systemd's, may sit on
the path) and detaches the programs pyctr attached there before, after the new one is on: in
between both apply, so access only narrows. The kernel drops the programs with the cgroup (rmdir).
"""

import errno
import os
import resource
import struct

from pyctr.runtime import syscalls
from pyctr.runtime.cgroups.resources import FIELD, device_rule_text
from pyctr.runtime.errors import PyctrError

NAME = "pyctr_devices"  # the program's name (bpftool prog show): pyctr replaces only its own
LICENSE = "Apache-2.0"  # no GPL-only helper is called: any license string loads
WILD = None

# <linux/bpf.h>
DEV_BLOCK, DEV_CHAR = 1, 2
ACC_MKNOD, ACC_READ, ACC_WRITE = 1, 2, 4
ACCESS_BITS = {"m": ACC_MKNOD, "r": ACC_READ, "w": ACC_WRITE}
ALL_ACCESS = ACC_MKNOD | ACC_READ | ACC_WRITE
TYPES = {"b": DEV_BLOCK, "c": DEV_CHAR}


class DeviceState:
    """What a v1 devices cgroup holds: a default, and exceptions (type, major, minor) -> access bits."""

    def __init__(self, default_allow: bool = True):  # True: a fresh cgroup's
        self.default_allow = default_allow
        self.exceptions: dict = {}

    @property
    def allows_everything(self) -> bool:
        return self.default_allow and not self.exceptions


def reduce(rules: list, state: DeviceState | None = None) -> DeviceState:
    """Replay the rules in order onto `state` (a fresh cgroup's: allow everything)."""
    state = state or DeviceState()
    for index, rule in enumerate(rules):
        allow, _ = device_rule_text(index, rule)  # checks the rule's shape
        kind = rule.get("type") or "a"
        if kind == "a":
            state = DeviceState(default_allow=allow)
            continue
        key = (kind, _number(index, rule, "major"), _number(index, rule, "minor"))
        access = _bits(rule.get("access") or "rwm")
        if allow != state.default_allow:
            state.exceptions[key] = state.exceptions.get(key, 0) | access
            continue
        _refuse_hole(index, key, access, state)
        left = state.exceptions.pop(key, 0) & ~access
        if left:
            state.exceptions[key] = left
    return state


def _number(index: int, rule: dict, name: str) -> int | None:
    value = rule.get(name)
    if value is None or value == -1:
        return WILD
    if value > 0xFFFFFFFF:
        raise PyctrError(f"{FIELD}.devices[{index}].{name}: {value} is not a device number")
    return value


def _bits(access: str) -> int:
    bits = 0
    for letter in access:
        bits |= ACCESS_BITS[letter]
    return bits


def _text(key: tuple, access: int) -> str:
    kind, major, minor = key
    letters = "".join(letter for letter in "rwm" if access & ACCESS_BITS[letter])
    return f"{kind} {'*' if major is WILD else major}:{'*' if minor is WILD else minor} {letters}"


def _refuse_hole(index: int, key: tuple, access: int, state: DeviceState) -> None:
    kind, major, minor = key
    for wider in ((kind, WILD, minor), (kind, major, WILD), (kind, WILD, WILD)):
        if wider != key and state.exceptions.get(wider, 0) & access:
            verb = "deny" if state.default_allow else "allow"
            raise PyctrError(f"{FIELD}.devices[{index}]: {_text(key, access)} cannot be taken out of the wider "
                             f"{verb} rule {_text(wider, state.exceptions[wider])} (cgroup v1 would silently keep "
                             f"it; runc refuses it too)")


# --- the program ---------------------------------------------------------------------------------
# struct bpf_insn: u8 code, u8 dst_reg:4 (low) src_reg:4 (high), s16 off, s32 imm; little-endian.
_LDX_W = 0x61  # BPF_LDX | BPF_MEM | BPF_W: dst = *(u32 *)(src + off)
_AND32_K, _RSH32_K, _MOV32_K, _MOV32_X = 0x54, 0x74, 0xB4, 0xBC  # BPF_ALU (32 bits, upper half cleared)
_JNE_K, _JNE_X, _JEQ_K = 0x55, 0x5D, 0x15  # BPF_JMP (64 bits: every register here holds a u32)
_EXIT = 0x95
NEXT = object()  # a jump to the next exception's block


def _insn(code: int, dst: int = 0, src: int = 0, off=0, imm: int = 0) -> tuple:
    return (code, dst, src, off, imm)


def _pack(code: int, dst: int, src: int, off: int, imm: int) -> bytes:
    if imm >= 1 << 31:  # a u32 above s32: sign-extended, it matches no real device number, as in v1
        imm -= 1 << 32
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def assemble(state: DeviceState) -> bytes:
    verdict = 0 if state.default_allow else 1  # what an exception that matches returns
    head = [_insn(_LDX_W, 2, 1, 0), _insn(_AND32_K, 2, imm=0xFFFF),
            _insn(_LDX_W, 3, 1, 0), _insn(_RSH32_K, 3, imm=16),
            _insn(_LDX_W, 4, 1, 4), _insn(_LDX_W, 5, 1, 8)]
    code = [_pack(*insn) for insn in head]
    for key in sorted(state.exceptions, key=lambda k: tuple(-1 if part is WILD else part for part in k)):
        kind, major, minor = key
        access = state.exceptions[key]
        block = [_insn(_JNE_K, 2, off=NEXT, imm=TYPES[kind])]
        if access != ALL_ACCESS:
            block += [_insn(_MOV32_X, 1, 3), _insn(_AND32_K, 1, imm=access)]
            block.append(_insn(_JEQ_K, 1, off=NEXT, imm=0) if state.default_allow else _insn(_JNE_X, 1, 3, off=NEXT))
        if major is not WILD:
            block.append(_insn(_JNE_K, 4, off=NEXT, imm=major))
        if minor is not WILD:
            block.append(_insn(_JNE_K, 5, off=NEXT, imm=minor))
        block += [_insn(_MOV32_K, 0, imm=verdict), _insn(_EXIT)]
        for position, (op, dst, src, off, imm) in enumerate(block):
            code.append(_pack(op, dst, src, len(block) - position - 1 if off is NEXT else off, imm))
    code += [_pack(_MOV32_K, 0, 0, 0, int(state.default_allow)), _pack(_EXIT, 0, 0, 0, 0)]
    return b"".join(code)


def compile_rules(rules: list) -> bytes | None:
    """The program for the list; None where it leaves every device open (nothing to load)."""
    state = reduce(rules)
    return None if state.allows_everything else assemble(state)


# --- the kernel ----------------------------------------------------------------------------------
def load(program: bytes) -> int:
    """The program's fd. Kernels before 5.11 charge programs to RLIMIT_MEMLOCK: on EPERM it is
    lifted for the load alone (a container started later must not inherit it)."""
    try:
        return syscalls.bpf_prog_load(syscalls.BPF_PROG_TYPE_CGROUP_DEVICE, program, LICENSE, NAME)
    except OSError as error:
        if error.errno != errno.EPERM:
            raise
        limits = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        try:
            resource.setrlimit(resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        except (OSError, ValueError):
            raise error from None
        try:
            return syscalls.bpf_prog_load(syscalls.BPF_PROG_TYPE_CGROUP_DEVICE, program, LICENSE, NAME)
        finally:
            resource.setrlimit(resource.RLIMIT_MEMLOCK, limits)


_unavailable: list = []  # the probe's answer, once a process


def unavailable() -> str | None:
    """Why this host cannot enforce a device list on cgroup v2 (None: it can): bpf(2) missing
    (ENOSYS), or refused to this process (EPERM: no CAP_BPF/CAP_SYS_ADMIN, a seccomp profile)."""
    if not _unavailable:
        try:
            os.close(load(assemble(DeviceState(default_allow=False))))
            _unavailable.append(None)
        except OSError as error:
            _unavailable.append(f"this host does not load eBPF device programs for pyctr "
                                f"(bpf(BPF_PROG_LOAD): {os.strerror(error.errno)})")
    return _unavailable[0]


def attached(cgroup: str) -> list[int]:
    """The ids of the device programs pyctr attached to this cgroup."""
    fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        own = _own_programs(fd)
    finally:
        os.close(fd)
    for _, prog_fd in own:
        os.close(prog_fd)
    return [prog_id for prog_id, _ in own]


def _own_programs(cgroup_fd: int) -> list[tuple[int, int]]:
    """(id, fd) of each program named NAME attached to the cgroup itself; the caller closes the fds."""
    own = []
    for prog_id in syscalls.bpf_prog_query(cgroup_fd, syscalls.BPF_CGROUP_DEVICE):
        try:
            prog_fd = syscalls.bpf_prog_get_fd_by_id(prog_id)
        except OSError as error:
            if error.errno in (errno.ENOENT, errno.EPERM, errno.EACCES):  # gone meanwhile, or an LSM's
                continue
            raise
        try:
            ours = syscalls.bpf_prog_info(prog_fd).name.decode() == NAME
        except OSError:
            ours = False
        if ours:
            own.append((prog_id, prog_fd))
        else:
            os.close(prog_fd)
    return own


def install(cgroup: str, program: bytes | None) -> None:
    """Put `program` on the cgroup in place of pyctr's earlier one (None: only take that off)."""
    try:
        fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as error:
        raise PyctrError(f"{FIELD}.devices: cannot open the cgroup {cgroup}: {error.strerror}") from None
    old = []
    try:
        old = _own_programs(fd)
        if program is not None:
            prog_fd = load(program)
            try:
                syscalls.bpf_prog_attach(fd, prog_fd, syscalls.BPF_CGROUP_DEVICE, syscalls.BPF_F_ALLOW_MULTI)
            finally:
                os.close(prog_fd)  # the attachment holds the program now
        for _, prog_fd in old:
            syscalls.bpf_prog_detach(fd, prog_fd, syscalls.BPF_CGROUP_DEVICE)
    except OSError as error:
        raise PyctrError(f"{FIELD}.devices: cannot put the device program on {cgroup}: {error.strerror}") from None
    finally:
        for _, prog_fd in old:
            os.close(prog_fd)
        os.close(fd)

"""The hybrid layout (limits through v1, membership in the unified hierarchy), and no layout."""

from _signal import SIGKILL  # signal's enums would import enum and functools

from pyctr.runtime.cgroups.resources import Limits, Usage, docker_resources
from pyctr.runtime.cgroups.v1 import CgroupV1, _create_or_undo
from pyctr.runtime.cgroups.v2 import CgroupV2
from pyctr.runtime.errors import PyctrError


class CgroupHybrid:
    """Limits and statistics through v1; membership in the unified hierarchy as well (as runc
    does), which gives the container cgroup.kill and cgroup.freeze. `linux.resources.unified`
    goes to the unified cgroup, for the controllers it has (on this kind of host often none)."""

    def __init__(self, v1: CgroupV1, unified: CgroupV2):
        self.v1 = v1
        self.unified = unified
        self.id = v1.id

    def path(self, controller: str = "") -> str:
        """A v1 controller's folder; with no controller, the unified one."""
        return self.v1.path(controller) if controller else self.unified.path()

    @property
    def path_spec(self) -> dict | None:
        return self.v1.place.spec  # one Place for both hierarchies

    @staticmethod
    def _split(resources) -> tuple[object, dict]:
        """(what v1 applies, what the unified cgroup applies)."""
        if isinstance(resources, Limits):
            return resources, {}
        res, _ = docker_resources(resources)
        unified = {"unified": res["unified"]} if res.get("unified") else {}
        return {k: v for k, v in res.items() if k != "unified"}, unified

    def refuse_what_cannot_apply(self, resources) -> None:
        for_v1, for_unified = self._split(resources)
        self.v1.refuse_what_cannot_apply(for_v1)
        self.unified.refuse_what_cannot_apply(for_unified)

    def create(self, resources=None) -> None:
        for_v1, for_unified = self._split(resources)
        self.refuse_what_cannot_apply(resources)
        self.v1.create(for_v1)
        _create_or_undo(self, lambda: self.unified.create(for_unified))

    def update(self, resources: dict) -> None:
        for_v1, for_unified = self._split(resources)
        self.v1._plan(docker_resources(for_v1)[0], updating=True)
        self.unified._plan(for_unified, updating=True)
        self.v1.update(for_v1)
        if for_unified:
            self.unified.update(for_unified)

    def add(self, pid: int) -> None:
        self.v1.add(pid)
        self.unified.add(pid)

    def procs_file(self) -> list[str]:
        return self.v1.procs_file() + self.unified.procs_file()

    def oom_killed(self) -> bool:
        return self.v1.oom_killed()

    def usage(self) -> Usage:
        return self.v1.usage()

    def stats(self) -> dict:
        return self.v1.stats()

    def pids(self) -> list[int]:
        return self.unified.pids() or self.v1.pids()

    def kill(self, sig: int = SIGKILL) -> None:
        if self.unified.exists():
            self.unified.kill(sig)
        else:
            self.v1.kill(sig)

    @property
    def state(self) -> str:
        return self.unified.state if self.unified.exists() else self.v1.state

    def freeze(self, timeout: float = 5.0) -> None:
        (self.unified if self.unified.exists() else self.v1).freeze(timeout)

    def thaw(self, timeout: float = 5.0) -> None:
        (self.unified if self.unified.exists() else self.v1).thaw(timeout)

    def exists(self) -> bool:
        return self.v1.exists() or self.unified.exists()

    def remove(self) -> None:
        self.unified.remove()
        self.v1.remove()


class NoCgroup:
    """No hierarchy is visible: nothing can start, and there is nothing to find or remove."""

    path_spec = None
    state = "thawed"

    def __init__(self, container_id: str, reason: str):
        self.id = container_id
        self.reason = reason

    def refuse_what_cannot_apply(self, resources) -> None:
        flags = ", ".join(resources.needs().values()) if isinstance(resources, Limits) else ""
        raise PyctrError(f"cannot apply {flags}: {self.reason}" if flags else
                         f"cannot start the container: {self.reason}")

    def create(self, resources=None) -> None:
        self.refuse_what_cannot_apply(resources)

    def update(self, resources: dict) -> None:
        raise PyctrError(f"cannot update the container's cgroup: {self.reason}")

    def add(self, pid: int) -> None:
        raise PyctrError(self.reason)

    def procs_file(self) -> list[str]:
        return []

    def oom_killed(self) -> bool:
        return False

    def usage(self) -> Usage:
        raise FileNotFoundError(self.reason)

    def stats(self) -> dict:
        raise FileNotFoundError(self.reason)

    def pids(self) -> list[int]:
        return []

    def kill(self, sig: int = SIGKILL) -> None:
        pass

    def freeze(self, timeout: float = 5.0) -> None:
        raise PyctrError(f"cannot freeze the container: {self.reason}")

    thaw = freeze

    def exists(self) -> bool:
        return False

    def remove(self) -> None:
        pass

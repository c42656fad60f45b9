"""Resource limits: one cgroup per container, driven by the OCI `linux.resources` and
`linux.cgroupsPath` (pyctr-oci), or by the Docker-style front end's flags (Limits).

The backend follows the host's layout, read from the mounts (/proc/self/mountinfo), and
PYCTR_CGROUP_VERSION=1|2 forces one (`pyctr info` shows which):
  v1      one hierarchy per controller (/sys/fs/cgroup/memory, ...);
  hybrid  v1 for the controllers, and the cgroup2 hierarchy (/sys/fs/cgroup/unified, which has
          few or no controllers) for membership: pyctr joins it too, as runc does, and kills and
          freezes through it;
  v2      the unified hierarchy alone (/sys/fs/cgroup on Debian 12, Ubuntu 22.04+ with systemd).
A resource that the host cannot apply refuses the start with one line naming the field (exit 125),
never silently ignored (but the deprecated memory.kernel: one warning); so does a host where no
hierarchy is visible (`ip netns exec` remounts /sys without them). A container's cgroup is found
where it was made, whatever PYCTR_CGROUP_VERSION says later.

    for_container(id)                      pyctr/<id> in each hierarchy (the Docker-style front end)
    for_spec(id, cgroups_path)             the OCI linux.cgroupsPath; keep backend.path_spec after
                                           create() and pass it as cgroups_path to later commands
    backend.create(resources) / update(resources) / refuse_what_cannot_apply(resources)
    backend.add(pid) / pids() / kill(sig) / freeze() / thaw() / state / stats() / oom_killed() / remove()
"""

from pyctr.runtime.cgroups.detect import (V1_CONTROLLERS, VERSION_VARIABLE, Backend, Layout, detect,
                                          parse_mountinfo)
from pyctr.runtime.cgroups.hybrid import CgroupHybrid, NoCgroup
from pyctr.runtime.cgroups.place import PARENT, UNIFIED, Place, own_cgroups
from pyctr.runtime.cgroups.resources import (CFS_PERIOD_US, DOCKER_DEVICE_RULES, Limits, Usage,
                                             resources_from_docker, shares_to_weight)
from pyctr.runtime.cgroups.v1 import CGROUP_ROOT, CgroupV1
from pyctr.runtime.cgroups.v2 import CgroupV2

__all__ = [
    "Backend", "CFS_PERIOD_US", "CGROUP_ROOT", "CgroupHybrid", "CgroupV1", "CgroupV2", "DOCKER_DEVICE_RULES",
    "Layout", "Limits", "NoCgroup", "PARENT", "Place", "UNIFIED", "Usage", "V1_CONTROLLERS", "VERSION_VARIABLE",
    "detect", "for_container", "for_spec", "own_cgroups", "parse_mountinfo", "resources_from_docker",
    "shares_to_weight",
]


def for_spec(container_id: str, cgroups_path: str | dict | None, layout: Layout | None = None) -> Backend:
    """The container's cgroup at the OCI `linux.cgroupsPath` (None: pyctr/<id>), or at a
    `path_spec` an earlier command kept."""
    return (layout or detect()).backend(container_id, Place.of(container_id, cgroups_path))


def for_container(container_id: str, layout: Layout | None = None) -> Backend:
    return for_spec(container_id, None, layout)

"""The local control plane for development and tests, without Docker (DESIGN §8-§9).

etcd + kube-apiserver (RBAC on, CRDs applied), the Firestore emulator, redis-server and a GCS
emulator run as local process groups managed from one state directory. ``routing-dev`` drives
it from a shell, ``LocalStack`` from Python, and ``devstack.pytest_plugin`` from tests.
"""

from devstack._components import COMPONENTS
from devstack._errors import StackError
from devstack._kube import apiserver_requests
from devstack._procs import stop_group
from devstack.stack import (
    DEFAULT_PROJECT,
    ComponentStatus,
    LocalStack,
    default_state_dir,
    free_port,
)

__all__ = [
    "COMPONENTS",
    "DEFAULT_PROJECT",
    "ComponentStatus",
    "LocalStack",
    "StackError",
    "apiserver_requests",
    "default_state_dir",
    "free_port",
    "stop_group",
]

"""Ray (an optional extra: ``pip install 'prunebench[ray]'``): joining a cluster, or starting
a local instance, for a sweep's runs (:mod:`harness.distributed`) and a run's candidate
fine-tunes (:mod:`harness.candidate_pool`)."""

from __future__ import annotations

import os
import socket

from harness.errors import HarnessError, first_line

RETRIES = 2  # a failed task, or one whose worker or node died, runs again (and resumes)


def require_ray():
    try:
        import ray
    except ImportError:
        raise HarnessError("--ray needs Ray: pip install 'prunebench[ray]' (or pip install ray)") from None
    return ray


def check_reachable(address: str | None) -> None:
    """One line, before anything is written, when a cluster address (``host:port``, given or
    in RAY_ADDRESS) takes no connection: Ray itself would retry for minutes."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    if not address or address == "auto" or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except (OSError, ValueError) as exc:
        raise HarnessError(f"cannot reach the Ray cluster at {address} ({getattr(exc, 'strerror', None) or exc}); "
                           "give the address ray start --head printed, or start one") from None


def connect(address: str | None):
    """Joins the cluster at ``address`` (``ray start --head`` prints it), else RAY_ADDRESS's,
    else starts a local instance with this machine's CPUs and GPUs."""
    ray = require_ray()
    address = address or os.environ.get("RAY_ADDRESS") or None  # an empty RAY_ADDRESS is none
    if not ray.is_initialized():
        try:
            # a run's output goes to its log file, not to the driver's terminal
            ray.init(address=address, include_dashboard=False, configure_logging=False, log_to_driver=False)
        except (ConnectionError, ValueError) as exc:
            raise HarnessError(f"cannot reach the Ray cluster at {address} "
                               f"({first_line(exc)}); start one with ray start --head") from None
    return ray


def node_name() -> str:
    """This process's node: host name and the Ray node's short id (two nodes may share a host)."""
    try:
        import ray

        node = ray.get_runtime_context().get_node_id()[:8] if ray.is_initialized() else None
    except Exception:
        node = None
    return f"{socket.gethostname()}/{node}" if node else socket.gethostname()

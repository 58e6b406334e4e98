"""Ray (an optional extra: ``pip install 'prunebench[ray]'``): joining a cluster, or starting
a local instance, for a sweep's runs (:mod:`harness.distributed`) and a run's candidate
fine-tunes (:mod:`harness.candidate_pool`)."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import tempfile

from harness.errors import HarnessError, first_line

RETRIES = 2  # a failed task, or one whose worker or node died, runs again (and resumes)


def require_ray():
    try:
        import ray
    except ImportError:
        raise HarnessError("--ray needs Ray: pip install 'prunebench[ray]' (or pip install ray)") from None
    return ray


PROBE_TIMEOUT = 5.0  # seconds a cluster address has to take a connection and answer as Ray does
# what an HTTP/2 client (Ray's gRPC) says first: the preface and an empty SETTINGS frame
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def check_reachable(address: str | None) -> None:
    """One line, before anything is written, when a cluster address (``host:port``, given or
    in RAY_ADDRESS) is not one: no port, none that takes a connection, or something that does
    not answer as Ray's GCS (a gRPC server's SETTINGS frame) within PROBE_TIMEOUT; Ray itself
    would retry for minutes, or wait forever."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    if not address or address == "auto" or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    fix = "give the address ray start --head printed, or start one"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise HarnessError(f"the Ray cluster address {address} has no valid port ({port!r}: a number from 1 to 65535); "
                           f"{fix}")
    try:
        with socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT) as conn:
            if os.environ.get("RAY_USE_TLS", "").lower() in ("1", "true"):
                return  # a TLS cluster answers a plain preface with nothing: a connection is all that is checked
            conn.settimeout(PROBE_TIMEOUT)
            conn.sendall(HTTP2_PREFACE)
            answer = conn.recv(9)
    except OSError as exc:
        raise HarnessError(f"cannot reach the Ray cluster at {address} ({exc.strerror or first_line(exc)}); "
                           f"{fix}") from None
    if len(answer) < 9 or answer[3] != 0x04:
        raise HarnessError(f"what listens at {address} is not a Ray cluster (no gRPC answer within {PROBE_TIMEOUT:g} s); "
                           f"{fix}")


def check_resources(ray, asks: dict, where: str) -> None:
    """One line when no node of the cluster has what each task asks (``num_cpus``,
    ``num_gpus``): Ray would keep such a task pending forever."""
    nodes = [n.get("Resources") or {} for n in ray.nodes() if n.get("Alive", True)]
    for key, resource in (("num_cpus", "CPU"), ("num_gpus", "GPU")):
        asked = asks.get(key, 1 if key == "num_cpus" else 0)
        most = max((n.get(resource, 0.0) for n in nodes), default=0.0)
        if asked > most:
            raise HarnessError(f"{key} = {asked:g} in {where}: no node of the Ray cluster has that many "
                               f"({resource}: {most:g} on the largest node); give at most {most:g}")


def connect(address: str | None):
    """Joins the cluster at ``address`` (``ray start --head`` prints it), else RAY_ADDRESS's,
    else starts a local instance with this machine's CPUs and GPUs."""
    ray = require_ray()
    address = address or os.environ.get("RAY_ADDRESS") or None  # an empty RAY_ADDRESS is none
    if not ray.is_initialized():
        try:
            # a run's output goes to its log file, not to the driver's terminal
            # joining a cluster only: the processes of a local instance would inherit the held file
            with held_back_stderr() if address is not None else contextlib.nullcontext():
                ray.init(address=address, include_dashboard=False, configure_logging=False, log_to_driver=False)
        except (ConnectionError, ValueError) as exc:
            why = first_line(exc)
            said = f"Failed to connect to Ray cluster at {address}"  # then not twice (Ray may dial another)
            what = f"cannot reach the Ray cluster at {address}" + (
                why[len(said):].rstrip(".") if why.startswith(said) else f" ({why})")
            raise HarnessError(f"{what}; start one with ray start --head") from None
    return ray


@contextlib.contextmanager
def held_back_stderr():
    """Whatever is written to file descriptor 2 meanwhile (Ray's core writes its retries of a
    cluster that does not answer there, some 20 lines of ``gcs_client.cc`` warnings, whatever
    RAY_BACKEND_LOG_LEVEL says) is held back: shown once the block succeeds, dropped when it
    fails, where its one-line error says what happened."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        succeeded = False
        try:
            yield
            succeeded = True
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if succeeded:
                held.seek(0)
                os.write(2, held.read())


def node_name() -> str:
    """This process's node: host name and the Ray node's short id (two nodes may share a host)."""
    try:
        import ray

        node = ray.get_runtime_context().get_node_id()[:8] if ray.is_initialized() else None
    except Exception:
        node = None
    return f"{socket.gethostname()}/{node}" if node else socket.gethostname()

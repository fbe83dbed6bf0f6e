"""What one backend holds on a Ray cluster, and freeing what no job of it owns any more (docs/cluster.md, "Faults").

A backend's id is ``pla4d-`` and 12 random hex digits, made at its first start with ``--executor ray`` and kept in its
data dir (``ray-backend-id``): not its data dir's path, which two machines on one cluster may share. It is the backend's
Ray namespace (two backends on one cluster never adopt each other's runs) and the start of its placement groups' names,
``ID-job-JOB-ATTEMPT``:
one per running job, detached so that a job's claim on its GPU outlives a backend restart, and shown by
``ray list placement-groups`` and the dashboard. Its runs on the node hosts are keyed ``ID/ID-job-JOB-ATTEMPT``.

A group that no running job owns holds its GPU (or custom resource) for nothing: Ray counts it taken, and one still
pending takes the next GPU that frees. :func:`release` removes a backend's groups and stops its runs on the node hosts,
all but those it is told to keep. The backend calls it when it starts, keeping the runs it adopted (a backend killed
between making a job's group and recording it in the job folder left one that nothing names), and now and then while
it runs, keeping its runs (a group whose removal failed). ``pla4d-backend ray-release`` calls it for a backend that will
not come back, keeping nothing.

This module imports ray only inside its functions: a backend without ``--executor ray`` never loads it.
"""

from __future__ import annotations

import argparse
import re
import secrets
from pathlib import Path
from typing import Any

HOSTS_NAMESPACE = "pla4d-hosts"  # one host per node, shared by every backend on the cluster (it hands out GPUs)
HOST_CALL_S = 10.0  # a host that does not answer this fast is left alone (its runs are freed by a later call)
BACKEND_ID = re.compile(r"pla4d-[0-9a-f]{12}")
ID_FILE = "ray-backend-id"  # in the data dir


def backend_id(data_dir: str | Path, create: bool = False) -> str:
    """The id of the backend of this data dir, the same for every start of it; made now with ``create`` when it has
    none yet (LookupError without)."""
    path = Path(data_dir) / ID_FILE
    try:
        ident = path.read_text().strip()
    except FileNotFoundError:
        if not create:
            raise LookupError(f"{data_dir} holds no {ID_FILE}: its backend never ran with --executor ray") from None
        ident = f"pla4d-{secrets.token_hex(6)}"
        partial = path.with_name(f"{ID_FILE}.partial")
        partial.write_text(ident + "\n")
        partial.replace(path)
    if not BACKEND_ID.fullmatch(ident):
        raise ValueError(f"{path} holds no backend id (pla4d- and 12 hex digits): {ident[:40]!r}")
    return ident


def group_name(backend: str, job_id: str, attempt: int) -> str:
    """The placement group of a job's run (and its run's name on its node's host)."""
    return f"{backend}-job-{job_id}-{attempt}"


def held_groups(backend: str) -> dict[str, str]:
    """The backend's placement groups that Ray holds or still tries to place: name -> state (``CREATED``,
    ``PENDING``, ``RESCHEDULING``, ...)."""
    from ray.util.placement_group import placement_group_table

    prefix = f"{backend}-job-"
    return {
        group["name"]: group["state"]
        for group in placement_group_table().values()
        if group["name"].startswith(prefix) and group["state"] != "REMOVED"
    }


def remove_group(name: str) -> bool:
    """Remove a placement group of this Ray connection's namespace by name; False when there is none."""
    from ray.util.placement_group import get_placement_group, remove_placement_group

    try:
        group = get_placement_group(name)
    except ValueError:  # gone already
        return False
    remove_placement_group(group)
    return True


def host_runs(ray: Any, backend: str) -> list[tuple[Any, str, str]]:
    """The backend's runs on the hosts of the cluster's alive nodes: (host handle, host name, run key)."""
    found = []
    for node in ray.nodes():
        if not node["Alive"]:
            continue
        name = f"host-{node['NodeID']}"
        try:
            host = ray.get_actor(name, namespace=HOSTS_NAMESPACE)
            keys = ray.get(host.keys.remote(f"{backend}/"), timeout=HOST_CALL_S)
        except Exception:  # no host there (no job ran on that node yet), or one that does not answer
            continue
        found.extend((host, name, key) for key in keys)
    return found


def release(ray: Any, backend: str, keep: set[str] | frozenset[str] = frozenset(), hosts: bool = True,
            dry_run: bool = False) -> list[str]:  # fmt: skip
    """Remove the backend's placement groups not named in ``keep`` and (``hosts``) stop its runs on the node hosts
    whose groups are not in ``keep``; -> one line per group or run freed (or that would be, with ``dry_run``). A run
    stopped here loses its worker, its node-local folder and its GPU claim on the host. The Ray connection's namespace
    must be the backend's (group names are looked up there, so another backend's groups are never touched)."""
    freed = []
    for name, state in sorted(held_groups(backend).items()):
        if name not in keep and (dry_run or remove_group(name)):
            freed.append(f"placement group {name} ({state})")
    if hosts:
        for host, host_name, key in host_runs(ray, backend):
            if key.split("/", 1)[1] in keep:
                continue
            if not dry_run:
                try:
                    ray.get(host.close.remote(key), timeout=HOST_CALL_S)
                except Exception:  # the host went meanwhile, and the run with it
                    continue
            freed.append(f"run {key} on {host_name}")
    return freed


def release_main(argv: list[str], default_data_dir: str) -> int:
    """``pla4d-backend ray-release``: free what a backend that will not come back holds on the cluster."""
    p = argparse.ArgumentParser(
        prog="pla4d-backend ray-release",
        description="Free what a backend that will not come back holds on a Ray cluster: its jobs' placement groups "
        "(which keep their GPUs taken) and their runs on the nodes (docs/cluster.md). Run it only while that backend "
        "is stopped: a backend started again on its data dir queues its running jobs again.",
    )
    p.add_argument("--ray-address", default="auto", metavar="ADDR",
                   help="the cluster: auto (default), HOST:PORT or ray://HOST:PORT")  # fmt: skip
    who = p.add_mutually_exclusive_group()
    who.add_argument("--data-dir", default=default_data_dir,
                     help=f"the backend's data dir (default ./{default_data_dir})")  # fmt: skip
    who.add_argument(
        "--backend", metavar="ID",
        help="the backend's id, pla4d-XXXXXXXXXXXX (in its data dir's ray-backend-id, and the start of its placement "
        "groups' names in `ray list placement-groups`), when its data dir is gone",
    )  # fmt: skip
    p.add_argument("--dry-run", action="store_true", help="list what would be freed, free nothing")
    args = p.parse_args(argv)
    if args.backend is not None and not BACKEND_ID.fullmatch(args.backend):
        p.error(f"--backend takes an id like pla4d-0123456789ab, got {args.backend!r}")
    try:
        backend = args.backend or backend_id(args.data_dir)
    except (LookupError, ValueError, OSError) as exc:
        p.error(str(exc))
    import ray

    ray.init(address=args.ray_address, namespace=backend, log_to_driver=False)
    try:
        freed = release(ray, backend, dry_run=args.dry_run)
    finally:
        ray.shutdown()
    for line in freed:
        print(f"{'would free' if args.dry_run else 'freed'} {line}")
    print(f"{backend}: {len(freed)} {'to free' if args.dry_run else 'freed'}")
    return 0

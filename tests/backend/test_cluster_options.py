"""``--executor ray``'s options, and the local path without ray (ray is the optional ``[cluster]`` extra)."""

from __future__ import annotations

import subprocess
import sys

from backend_helpers import REPO

from backend.server import build_parser, cluster_options


def test_local_path_never_imports_ray():
    code = ("import sys, backend.server, backend.worker, backend.client_cli, backend.scheduler, backend.executor; "
            "sys.exit('ray' in sys.modules or 'backend.executor_ray' in sys.modules)")  # fmt: skip
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


def test_cluster_options():
    parse = build_parser().parse_args
    assert cluster_options(parse([])) is None  # local, as before
    assert cluster_options(parse(["--executor", "ray"])) == {
        "address": None, "resource": "GPU", "per_job": 1.0, "memory_mb": 0, "shared_dir": None,
    }  # fmt: skip
    got = cluster_options(parse(["--executor", "ray", "--ray-address", "ray://head:10001", "--ray-resource",
                                 "pla4d_a100", "--ray-per-job", "0.5", "--ray-memory-mb", "8192", "--shared-dir",
                                 "/mnt/pla4d", "--max-attempts", "3"]))  # fmt: skip
    assert got == {"address": "ray://head:10001", "resource": "pla4d_a100", "per_job": 0.5, "memory_mb": 8192,
                   "shared_dir": "/mnt/pla4d"}  # fmt: skip


def test_ray_release_names():
    """A backend's id is stable for its data dir and starts its placement groups' names (ray-release finds them by
    it); ``ray-release`` refuses an id of another form before it reaches any cluster."""
    import pytest

    from backend.ray_cleanup import BACKEND_ID, backend_id, group_name
    from backend.server import main

    ident = backend_id("/srv/pla4d/jobs")
    assert BACKEND_ID.fullmatch(ident) and ident == backend_id("/srv/pla4d/../pla4d/jobs") != backend_id("/srv/x/jobs")
    assert group_name(ident, "0123456789abcdef", 2) == f"{ident}-job-0123456789abcdef-2"
    with pytest.raises(SystemExit) as exit_:
        main(["ray-release", "--backend", "job-0123"])
    assert exit_.value.code == 2

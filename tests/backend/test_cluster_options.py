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

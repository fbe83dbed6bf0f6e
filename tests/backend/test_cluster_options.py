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


def test_ray_release_names(tmp_path):
    """A backend's id is made once and kept in its data dir (random: two machines may use the same data dir path on
    one cluster), and starts its placement groups' names (ray-release finds them by it); ``ray-release`` refuses a data
    dir without one, or an id of another form, before it reaches any cluster."""
    import pytest

    from backend.ray_cleanup import BACKEND_ID, backend_id, group_name
    from backend.server import main

    with pytest.raises(LookupError):
        backend_id(tmp_path)
    ident = backend_id(tmp_path, create=True)
    assert BACKEND_ID.fullmatch(ident) and backend_id(tmp_path) == backend_id(tmp_path, create=True) == ident
    (tmp_path / "other").mkdir()
    assert backend_id(tmp_path / "other", create=True) != ident
    assert group_name(ident, "0123456789abcdef", 2) == f"{ident}-job-0123456789abcdef-2"
    for args in (["--backend", "job-0123"], ["--data-dir", str(tmp_path / "none")]):
        with pytest.raises(SystemExit) as exit_:
            main(["ray-release", *args])
        assert exit_.value.code == 2

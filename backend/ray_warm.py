"""A warm job worker on a Ray node: ``python -m backend.ray_warm``, started ahead of its job by the node's host
(:class:`backend.ray_host.NodeHost`).

It imports torch and the engine (most of a job's start: ~4 s of a cold ``python -m backend.worker`` on a loaded
2-core machine), says ``ready`` on stdout, then waits on stdin for one job: a JSON line with the worker's arguments,
the job's log and the environment the job runs with (``CUDA_VISIBLE_DEVICES`` of the GPU its placement group holds).
It then runs :func:`backend.worker.main`, exactly as a cold worker would, and exits: a process runs one job, so
nothing a job leaves in memory reaches the next one. Importing torch does not initialise CUDA, so a warm process
holds no GPU and the job's ``CUDA_VISIBLE_DEVICES`` still applies. End of stdin without a job (the host is retiring
it) ends it; it dies with the host (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import json
import os
import sys


def main() -> int:
    from backend.worker import _die_with_parent

    _die_with_parent()
    # What a job imports before its first event: the engine's runner and torch under it.
    import torch  # noqa: F401

    import backend.worker
    import pla4d.runner  # noqa: F401

    if torch.cuda.is_initialized():  # would pin this process to the GPUs it saw at import, not the job's
        return 4
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    line = sys.stdin.readline()
    if not line.strip():
        return 0
    job = json.loads(line)
    log = os.open(job["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.environ.update(job["env"])
    return backend.worker.main(job["argv"])


if __name__ == "__main__":
    sys.exit(main())

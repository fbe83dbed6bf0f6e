"""The one runner and its entry points (see :mod:`pla4d.runner.core` and docs/architecture.md)."""

from pla4d.runner.core import EventSink, RunContext, Stage, run_stages
from pla4d.runner.entry import STAGES, run_example, run_generate, run_lift, run_video_to_4d

__all__ = [
    "STAGES", "EventSink", "RunContext", "Stage", "run_example", "run_generate", "run_lift",
    "run_stages", "run_video_to_4d",
]  # fmt: skip

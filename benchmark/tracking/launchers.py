"""Parent runs that know which process owns them, so a dead launcher's run is closed.

A launcher killed by kill -9, a crash or a reboot cannot close its grid's parent run; the next
start on the same host finds it RUNNING with a pid that is gone (or reused by another process,
told apart by its start time) and closes it as KILLED. Runs of other hosts are left alone.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping

from benchmark.tracking.client import Tracker, literal


def start_launcher_run(tracker: Tracker, name: str, tags: Mapping[str, str]) -> str:
    """A parent run tagged with this process's host, pid and start time."""
    import psutil

    me = psutil.Process()
    owner = {
        "launcher_host": socket.gethostname(),
        "launcher_pid": str(me.pid),
        "launcher_started": f"{me.create_time():.2f}",
    }
    return tracker.start_run(name, {**tags, **owner})


def _alive(tags: Mapping[str, str]) -> bool:
    import psutil

    try:
        started = psutil.Process(int(tags["launcher_pid"])).create_time()
    except (psutil.Error, KeyError, ValueError):
        return False
    return f"{started:.2f}" == tags.get("launcher_started")


def close_dead_launchers(tracker: Tracker) -> list[str]:
    """Mark KILLED the RUNNING parent runs of this host whose launcher is gone."""
    query = (
        f"attributes.status = 'RUNNING' and tags.launcher_host = {literal(socket.gethostname())}"
    )
    closed = []
    for run in tracker.runs(query):
        if not _alive(run.data.tags):
            tracker.set_tags(
                run.info.run_id, {"error": "its launcher died; closed by the next start"}
            )
            tracker.finish(run.info.run_id, "KILLED")
            closed.append(run.info.run_id)
    return closed

"""gunicorn settings for the prediction API on Cloud Run (and `make run`, and the benchmark).

Start: `gunicorn -c gunicorn.conf.py 'app:create_app()'`. Binds 0.0.0.0:$PORT (Cloud Run sets PORT; 8080
otherwise). One worker per CPU the container may use, each with a few threads so one instance can take
Cloud Run's concurrent requests; every worker builds its own app, so it loads the model once at start-up
and runs its own model follower thread. `WEB_CONCURRENCY` and `GUNICORN_THREADS` override the counts.
"""

from __future__ import annotations

import math
import os
from pathlib import Path


def cpu_limit(cgroup_cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """Return the CPUs this container may use: the cgroup v2 quota when set, else the CPU affinity."""
    available = len(os.sched_getaffinity(0))
    try:
        quota, period = cgroup_cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return available
    if quota == "max":
        return available
    return max(1, min(available, math.ceil(int(quota) / int(period))))


bind = f"0.0.0.0:{os.environ.get('PORT', '8080')}"
workers = int(os.environ.get("WEB_CONCURRENCY", cpu_limit()))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = 0  # Cloud Run enforces the request timeout itself
graceful_timeout = 10
keepalive = 5
accesslog = None  # Cloud Run already logs every request
errorlog = "-"
control_socket_disable = True  # no ~/.gunicorn socket: the runtime user has no home, Cloud Run no use for it
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
if Path("/dev/shm").is_dir():
    worker_tmp_dir = "/dev/shm"  # heartbeat files off the container's overlay disk


def post_fork(server: object, worker: object) -> None:
    """Install the API's logging (JSON on Cloud Run, with the request's trace) in each new worker."""
    from app.logs import configure_api_logging
    from app.settings import load_settings

    settings = load_settings()
    configure_api_logging(settings.LOG_FORMAT, settings.LOG_LEVEL, settings.GOOGLE_CLOUD_PROJECT)

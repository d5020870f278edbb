"""gunicorn settings for the prediction API on Cloud Run (and `make run`, and the benchmark).

Start: `gunicorn -c gunicorn.conf.py 'app:create_app()'`. Binds $BIND_HOST:$PORT: loopback unless BIND_HOST
says otherwise (the Dockerfile sets 0.0.0.0, which the container needs; `make serve` leaves the local,
unauthenticated API on 127.0.0.1); Cloud Run sets PORT, 8080 otherwise. One worker per CPU the container may
use (`WEB_CONCURRENCY` overrides it); each is a gevent worker (app/worker.py: a greenlet per connection, so
clients that upload slowly hold a connection, not the worker) and answers gunicorn's own errors in JSON.
Every worker builds its own app, so it loads the model once at start-up and runs its own model follower.

Limits gunicorn enforces itself, before the app (answered in JSON by app/worker.py): a request line over
`limit_request_line` bytes is a 414, more than `limit_request_fields` headers or one over
`limit_request_field_size` bytes a 431, a malformed request line, header or Content-Length a 400. The request
line and headers must arrive within `keepalive` seconds; the body within BODY_TIMEOUT_SECONDS (app, 408).
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


bind = f"{os.environ.get('BIND_HOST', '127.0.0.1')}:{os.environ.get('PORT', '8080')}"
workers = int(os.environ.get("WEB_CONCURRENCY", cpu_limit()))
worker_class = "app.worker.ApiWorker"
worker_connections = 1000  # open connections per worker, slow ones included; more wait in the backlog
timeout = 30  # a worker whose event loop is blocked this long (no heartbeat) is replaced
graceful_timeout = 10
keepalive = 5  # idle keep-alive connections close after this; also the deadline for a request's headers
limit_request_line = 4094  # gunicorn's defaults, written out because the README documents them
limit_request_fields = 100
limit_request_field_size = 8190
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


def post_worker_init(worker: object) -> None:
    """Leave what the worker loaded (modules, the app, the model) out of the garbage collector's passes.

    A batch of 10,000 instances makes about 100,000 objects that live for the request; they trigger a full
    collection, which walked every object the worker holds (about 150,000) and added some 30 ms to the batch.
    Frozen objects are still freed by reference counting; only cycles among them would stay.
    """
    import gc

    gc.freeze()

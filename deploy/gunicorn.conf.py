"""gunicorn settings for the gateway: gevent workers, sized from the environment.

    gunicorn -c deploy/gunicorn.conf.py wsgi:app

The app is loaded in each worker (no preload), so every worker starts its own
background loops after gevent has patched it; the health lease keeps probing single.
"""

import multiprocessing
import os

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"
worker_class = "gevent"
workers = int(os.environ.get("WORKERS") or multiprocessing.cpu_count())
worker_connections = int(os.environ.get("WORKER_CONNECTIONS") or 2000)
backlog = 4096
# Streams can last minutes; the arbiter's heartbeat is separate from request time.
timeout = 60
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT_SECONDS") or 30)
keepalive = 75
preload_app = False

# Prometheus multiprocess mode: each worker writes its metrics here, /metrics sums them.
_instance = os.environ.get("INSTANCE_PATH") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "instance"
)
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", os.path.join(_instance, "metrics"))
# gunicorn 27's control socket defaults to ~/.gunicorn/gunicorn.ctl, shared by every
# gunicorn of the user: keep each gateway's next to its own instance.
control_socket = os.path.join(_instance, "gunicorn.ctl")
# Several workers must not each rotate the same log file; logrotate does it (copytruncate).
if workers > 1:
    os.environ["GATEWAY_LOG_ROTATION"] = "external"
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()


def worker_exit(server, worker) -> None:
    """Hand the health lease back and write queued usage before the worker goes."""
    import wsgi

    wsgi.stop_background(wsgi.app)


def on_starting(server) -> None:
    """Start every run with empty metric files (values from a previous run would add up)."""
    import shutil

    folder = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder, exist_ok=True)


def child_exit(server, worker) -> None:
    """Drop a dead worker's live gauges (in-flight) from the sums."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)

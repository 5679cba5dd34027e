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
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()


def worker_exit(server, worker) -> None:
    """Hand the health lease back and write queued usage before the worker goes."""
    import wsgi

    wsgi.stop_background(wsgi.app)

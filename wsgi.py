"""Entry point: gevent first, then the app. ``gunicorn wsgi:app`` or ``python wsgi.py``."""

from gevent import monkey

monkey.patch_all()

import gc  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402

from webapp import create_app, start_background, stop_background  # noqa: E402
from webapp.config import ConfigError  # noqa: E402

try:
    app = create_app()
except ConfigError as exc:
    sys.stderr.write(f"configuration error: {exc}\n")
    sys.exit(2)
# ``flask --app wsgi create-user`` imports this module too: a command must not start
# the health checker (it would take the lease and leave with it).
if os.environ.get("FLASK_RUN_FROM_CLI") != "true":
    start_background(app)
# Everything loaded so far lives as long as the process: keep it out of the garbage
# collector's full passes, which otherwise stall every request for milliseconds.
gc.freeze()
# Background writers run SQLite in native threads; a short switch interval hands the
# GIL back to the gevent hub within a millisecond instead of five.
sys.setswitchinterval(0.001)


def serve() -> None:
    """Serve with gevent's own server (development, tests); production uses gunicorn."""
    from gevent.pywsgi import WSGIHandler, WSGIServer

    class Handler(WSGIHandler):
        def get_environ(self) -> dict:
            environ = super().get_environ()
            # gevent's input ends cleanly at the end of a chunked body; saying so lets
            # Werkzeug read (and size-limit) chunked uploads instead of seeing nothing.
            environ["wsgi.input_terminated"] = True
            return environ

    host, port = app.config["HOST"], app.config["PORT"]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # gevent's server writes headers and body separately; without TCP_NODELAY every
    # small response waits ~40 ms on Nagle and delayed ACK.
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    listener.bind((host, port))
    listener.listen(2048)
    server = WSGIServer(listener, app, log=None, handler_class=Handler)

    def shutdown() -> None:
        # Stop accepting and let requests in flight finish; serve_forever then returns.
        server.stop(timeout=float(os.environ.get("GRACEFUL_TIMEOUT_SECONDS") or 30))

    gevent.signal_handler(signal.SIGTERM, lambda: gevent.spawn(shutdown))
    gevent.signal_handler(signal.SIGINT, lambda: gevent.spawn(shutdown))
    logging.getLogger("gateway.api").info("listening on %s:%s", host, listener.getsockname()[1])
    server.serve_forever()
    # Hand the health lease back and write queued usage before the process ends.
    stop_background(app)


if __name__ == "__main__":
    serve()

#!/usr/bin/env bash
# Set up (first run) and start the gateway: gunicorn with gevent workers.
#   ./start.sh               in the background; returns once /health answers
#   ./start.sh --foreground  in the foreground (for supervisor or systemd)
set -euo pipefail
FOREGROUND=0
[ "${1:-}" = "--foreground" ] && FOREGROUND=1
cd "$(dirname "$0")"
ROOT=$(pwd)
INSTANCE="${INSTANCE_PATH:-$ROOT/instance}"
PIDFILE="$INSTANCE/gateway.pid"
LOG="$INSTANCE/logs/server.log"
PYTHON="${PYTHON:-python3}"

if [ ! -x .venv/bin/python ]; then
  echo "Creating .venv and installing requirements..."
  "$PYTHON" -m venv .venv
  .venv/bin/pip install --quiet --upgrade pip
fi
if [ ! -f .venv/.requirements-installed ] || [ requirements.txt -nt .venv/.requirements-installed ]; then
  .venv/bin/pip install --quiet -r requirements.txt
  touch .venv/.requirements-installed
fi

mkdir -p "$INSTANCE/logs"
chmod 700 "$INSTANCE"

if [ "$FOREGROUND" = 0 ] && [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  echo "The gateway is already running (pid $(cat "$PIDFILE")); ./stop.sh stops it."
  exit 0
fi

if [ -z "${ADMIN_API_KEY:-}" ]; then
  KEYFILE="$INSTANCE/admin_api_key"
  if [ ! -s "$KEYFILE" ]; then
    (umask 077; .venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(32))' > "$KEYFILE")
    # Under supervisor or systemd stdout is a log file: name the file, never the secret.
    if [ "$FOREGROUND" = 1 ]; then
      echo "Generated an admin API key into $KEYFILE (mode 600)."
    else
      echo "Generated an admin API key (shown once; it is kept in $KEYFILE, mode 600):"
      echo "  $(cat "$KEYFILE")"
    fi
  fi
  ADMIN_API_KEY=$(cat "$KEYFILE")
  export ADMIN_API_KEY
fi
export INSTANCE_PATH="$INSTANCE"

# First start: a dashboard user "admin" with a random password, shown once and kept in
# instance/admin_password (mode 600). Once any user exists this does nothing.
NEW_PASSWORD=$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(18))')
CREATED=$(printf '%s\n' "$NEW_PASSWORD" \
  | .venv/bin/python -m flask --app wsgi create-user admin --admin --if-no-users)
case "$CREATED" in
  "created user"*)
    PWFILE="$INSTANCE/admin_password"
    (umask 077; printf '%s\n' "$NEW_PASSWORD" > "$PWFILE")
    if [ "$FOREGROUND" = 1 ]; then
      echo "Created the dashboard user admin; its password is in $PWFILE (mode 600)."
    else
      echo "Created the dashboard user admin; its password (shown once; kept in $PWFILE, mode 600):"
      echo "  $NEW_PASSWORD"
    fi
    ;;
esac
unset NEW_PASSWORD CREATED

HOST="${HOST:-0.0.0.0}"
PORT="${PORT:-8000}"
export HOST PORT
# Every open stream holds two sockets (client and backend) in a worker.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
GUNICORN=(.venv/bin/gunicorn -c deploy/gunicorn.conf.py --pid "$PIDFILE" wsgi:app)
if [ "$FOREGROUND" = 1 ]; then
  exec "${GUNICORN[@]}"
fi
nohup "${GUNICORN[@]}" >>"$LOG" 2>&1 &
echo $! > "$PIDFILE"

PROBE_HOST="$HOST"
case "$PROBE_HOST" in 0.0.0.0|"") PROBE_HOST=127.0.0.1 ;; ::|"[::]") PROBE_HOST="[::1]" ;; esac
for _ in $(seq 1 150); do
  if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    echo "The gateway exited during start-up. Last lines of $LOG:" >&2
    tail -n 30 "$LOG" >&2
    rm -f "$PIDFILE"
    exit 1
  fi
  if .venv/bin/python - "$PROBE_HOST" "$PORT" <<'PY' 2>/dev/null
import sys, urllib.request
urllib.request.urlopen(f"http://{sys.argv[1]}:{sys.argv[2]}/health", timeout=1)
PY
  then
    echo "Gateway running on http://$PROBE_HOST:$PORT (pid $(cat "$PIDFILE")); logs in $INSTANCE/logs/"
    exit 0
  fi
  sleep 0.2
done
echo "The gateway did not answer /health within 30 s. Last lines of $LOG:" >&2
tail -n 30 "$LOG" >&2
exit 1

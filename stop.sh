#!/usr/bin/env bash
# Stop the gateway started by start.sh: TERM (gunicorn stops accepting and lets open
# streams finish for up to GRACEFUL_TIMEOUT_SECONDS), wait, then KILL.
set -euo pipefail
cd "$(dirname "$0")"
INSTANCE="${INSTANCE_PATH:-$(pwd)/instance}"
PIDFILE="$INSTANCE/gateway.pid"
WAIT=$(( ${GRACEFUL_TIMEOUT_SECONDS:-30} + 10 ))

if [ ! -f "$PIDFILE" ]; then
  echo "No pid file at $PIDFILE: the gateway is not running."
  exit 0
fi
PID=$(cat "$PIDFILE")
if ! kill -0 "$PID" 2>/dev/null; then
  echo "The gateway (pid $PID) was not running; removing the stale pid file."
  rm -f "$PIDFILE"
  exit 0
fi
kill -TERM "$PID"
for _ in $(seq 1 $((WAIT * 5))); do
  if ! kill -0 "$PID" 2>/dev/null; then
    rm -f "$PIDFILE"
    echo "Gateway stopped."
    exit 0
  fi
  sleep 0.2
done
echo "The gateway did not stop within ${WAIT} s; killing it."
kill -KILL "$PID" 2>/dev/null || true
rm -f "$PIDFILE"

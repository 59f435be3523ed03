#!/usr/bin/env bash
# The production layout on one machine: PostgreSQL, dagster-daemon, dagster-webserver, and a Stripe emulator with
# several sandbox accounts. Everything lives under .stack/ in the project root.
#
#   deploy/stack.sh start    # (make stack) start what is not running; safe to run again
#   deploy/stack.sh stop     # (make stack-stop) stop exactly the processes recorded in .stack/*.pid, then PostgreSQL
#   deploy/stack.sh status
#
# Knobs (environment): SEGFLOW_STACK_ACCOUNTS (5), SEGFLOW_STACK_SUBSCRIPTIONS (40 per account),
# SEGFLOW_STACK_LATENCY (0.3 s per emulator request), SEGFLOW_STACK_WEB_PORT (3000),
# SEGFLOW_STACK_EMULATOR_PORT (12121), SEGFLOW_PG_PORT (a free port, chosen once and kept in .stack/pg.env).
#
# .stack/env holds what the processes run with (DAGSTER_HOME, SEGFLOW_PG_*, the integrations file, the emulator's
# URL and sandbox keys): `set -a; . .stack/env; set +a` to use the stack's instance from a shell.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STACK=$ROOT/.stack
LOGS=$STACK/logs
BIN=$ROOT/.venv/bin
PY=$BIN/python
DEPLOY=$ROOT/deploy

say() { echo "stack: $*"; }
die() { echo "stack: $*" >&2; exit 1; }

# A recorded PID is ours only if that process is alive and still runs the command we started.
alive() {
  local name=$1 pattern=$2 pid
  [[ -f $STACK/$name.pid ]] || return 1
  pid=$(<"$STACK/$name.pid")
  [[ $pid =~ ^[0-9]+$ ]] && [[ -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$pattern"
}

# Start a long-running process in the background with the stack's environment; record its PID.
launch() {
  local name=$1; shift
  (
    cd "$ROOT"
    set -a; . "$STACK/env"; set +a
    exec nohup "$@" >>"$LOGS/$name.log" 2>&1 </dev/null
  ) &
  echo $! >"$STACK/$name.pid"
  say "$name started (pid $!, log .stack/logs/$name.log)"
}

free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local seconds=$1 what=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@"; do
    ((SECONDS < deadline)) || die "$what did not come up within ${seconds}s; see .stack/logs/"
    sleep 0.5
  done
}

http_ok() {
  "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$1" >/dev/null 2>&1
}

# Up when the UI answers; give up at once if the UI or the daemon exited (e.g. the instance config is wrong).
dagster_up() {
  alive webserver dagster-webserver || die "dagster-webserver exited; see .stack/logs/webserver.log"
  alive daemon dagster-daemon || die "dagster-daemon exited; see .stack/logs/daemon.log"
  http_ok "$1"
}

start() {
  [[ -x $PY ]] || die "no .venv: run make install first"
  "$PY" -c 'import dagster_postgres' 2>/dev/null \
    || die "dagster-postgres is not installed in .venv: run make install (it is in the test extra)"
  mkdir -p "$STACK" "$LOGS" "$STACK/dagster_home" "$STACK/data"
  # PostgreSQL needs to reach its data directory as its own OS user when we are root.
  chmod 711 "$STACK"

  # 1. PostgreSQL: connection settings chosen once (random password, free port) and kept.
  if [[ ! -f $STACK/pg.env ]]; then
    umask 077
    {
      echo "SEGFLOW_PG_HOST=127.0.0.1"
      echo "SEGFLOW_PG_PORT=${SEGFLOW_PG_PORT:-$(free_port)}"
      echo "SEGFLOW_PG_USER=dagster"
      echo "SEGFLOW_PG_PASSWORD=$("$PY" -c 'import secrets; print(secrets.token_hex(16))')"
      echo "SEGFLOW_PG_DB=dagster"
    } >"$STACK/pg.env"
    umask 022
  fi
  (set -a; . "$STACK/pg.env"; set +a; "$DEPLOY/postgres.sh" start "$STACK/pg" "$STACK/run" "$LOGS/postgres.log")

  # 2. The emulator with N sandbox accounts; it writes the integrations file and its env once it listens.
  if alive emulator sandbox_accounts.py; then
    say "emulator already running (pid $(<"$STACK/emulator.pid"))"
  else
    rm -f "$STACK/sandbox.env"
    : >"$STACK/env"
    launch emulator "$PY" "$DEPLOY/sandbox_accounts.py" \
      --accounts "${SEGFLOW_STACK_ACCOUNTS:-5}" --subscriptions "${SEGFLOW_STACK_SUBSCRIPTIONS:-40}" \
      --latency "${SEGFLOW_STACK_LATENCY:-0.3}" --port "${SEGFLOW_STACK_EMULATOR_PORT:-12121}" \
      --integrations "$STACK/integrations.yaml" --env-file "$STACK/sandbox.env"
    wait_for 120 "the emulator" test -f "$STACK/sandbox.env"
  fi

  # 3. One environment for the Dagster processes (and for runs: they inherit it through the code server).
  umask 077
  {
    echo "# written by deploy/stack.sh; sandbox keys of the local emulator only"
    echo "DAGSTER_HOME=$STACK/dagster_home"
    echo "SEGFLOW_INTEGRATIONS_FILE=$STACK/integrations.yaml"
    echo "SEGFLOW_DUCKDB_PATH=$STACK/data/segflow.duckdb"
    cat "$STACK/pg.env" "$STACK/sandbox.env"
  } >"$STACK/env.tmp"
  mv "$STACK/env.tmp" "$STACK/env"
  umask 022
  cp "$DEPLOY/dagster.yaml" "$STACK/dagster_home/dagster.yaml"

  # 4. The daemon (schedule, run queue, run monitoring and retries) and the UI, on the same instance.
  if alive daemon dagster-daemon; then
    say "daemon already running (pid $(<"$STACK/daemon.pid"))"
  else
    launch daemon "$BIN/dagster-daemon" run -w "$ROOT/workspace.yaml"
  fi
  local port=${SEGFLOW_STACK_WEB_PORT:-3000}
  if alive webserver dagster-webserver; then
    say "webserver already running (pid $(<"$STACK/webserver.pid"))"
  else
    launch webserver "$BIN/dagster-webserver" -h 127.0.0.1 -p "$port" -w "$ROOT/workspace.yaml"
  fi
  wait_for 180 "dagster-webserver" dagster_up "http://127.0.0.1:$port/server_info"
  say "up: UI http://127.0.0.1:$port, instance $STACK/dagster_home (PostgreSQL), integrations $STACK/integrations.yaml"
  say "use it from a shell: set -a; . .stack/env; set +a"
}

stop_pid() {  # stop_pid NAME PATTERN: TERM, wait up to 30 s, then KILL; only a PID we recorded
  local name=$1 pattern=$2 pid
  if alive "$name" "$pattern"; then
    pid=$(<"$STACK/$name.pid")
    kill -TERM "$pid"
    for _ in $(seq 60); do alive "$name" "$pattern" || break; sleep 0.5; done
    if alive "$name" "$pattern"; then kill -KILL "$pid"; say "$name killed (pid $pid)"; else say "$name stopped (pid $pid)"; fi
  else
    say "$name not running"
  fi
  rm -f "$STACK/$name.pid"
}

stop() {
  [[ -d $STACK ]] || { say "nothing to stop"; return 0; }
  stop_pid webserver dagster-webserver
  stop_pid daemon dagster-daemon
  stop_pid emulator sandbox_accounts.py
  if [[ -f $STACK/pg/PG_VERSION ]]; then
    "$DEPLOY/postgres.sh" stop "$STACK/pg"
  fi
}

status() {
  local name pattern
  for pair in "emulator sandbox_accounts.py" "daemon dagster-daemon" "webserver dagster-webserver"; do
    read -r name pattern <<<"$pair"
    if alive "$name" "$pattern"; then say "$name running (pid $(<"$STACK/$name.pid"))"; else say "$name stopped"; fi
  done
  if [[ -f $STACK/pg/PG_VERSION ]]; then "$DEPLOY/postgres.sh" status "$STACK/pg" || true; else say "postgres not initialised"; fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) die "usage: $0 start|stop|status" ;;
esac

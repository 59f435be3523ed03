#!/usr/bin/env bash
# A local PostgreSQL server for the Dagster instance (runs, event logs, schedules).
#
#   deploy/postgres.sh start DATA_DIR SOCKET_DIR LOG_FILE   # initdb on first use, then start; no-op if running
#   deploy/postgres.sh stop DATA_DIR                        # pg_ctl stop -m fast; no-op if not running
#   deploy/postgres.sh status DATA_DIR
#
# Connection settings from the environment (the same variables deploy/dagster.yaml reads):
#   SEGFLOW_PG_PORT (required), SEGFLOW_PG_USER, SEGFLOW_PG_PASSWORD (required), SEGFLOW_PG_DB.
# The server listens on 127.0.0.1 only, plus a unix socket in SOCKET_DIR; every login needs the password.
#
# PostgreSQL refuses to run as root. When this script runs as root it runs the server as the OS user
# SEGFLOW_PG_OS_USER (default: `postgres`, the user the Debian package creates; created as a system user if
# missing) and hands it DATA_DIR, SOCKET_DIR and LOG_FILE. Every parent directory must be traversable by that user.
set -euo pipefail

die() { echo "postgres.sh: $*" >&2; exit 1; }

find_bin() {
  local name=$1 dir
  if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return 0; fi
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r) /usr/local/pgsql/bin; do
    if [[ -x $dir/$name ]]; then echo "$dir/$name"; return 0; fi
  done
  return 1
}

pg_bin_dir() {
  local pg_ctl
  pg_ctl=$(find_bin pg_ctl) || die "PostgreSQL server binaries not found (pg_ctl); install them, e.g. apt-get install -y postgresql"
  dirname "$pg_ctl"
}

# Run a command as the server's OS user (root cannot run postgres), or as ourselves when not root.
as_pg() {
  if [[ $(id -u) -ne 0 ]]; then "$@"; return; fi
  if command -v runuser >/dev/null 2>&1; then
    runuser -u "$PG_OS_USER" -- "$@"
  else
    su -s /bin/sh "$PG_OS_USER" -c "$(printf '%q ' "$@")"
  fi
}

ensure_os_user() {
  [[ $(id -u) -eq 0 ]] || return 0
  if ! id -u "$PG_OS_USER" >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_OS_USER" \
      || die "cannot create the system user $PG_OS_USER to run PostgreSQL (it refuses to run as root)"
  fi
}

give_to_pg() {
  [[ $(id -u) -eq 0 ]] || return 0
  chown "$PG_OS_USER" "$@"
}

is_running() {
  [[ -f $1/postmaster.pid ]] && as_pg "$BIN/pg_ctl" -D "$1" status >/dev/null 2>&1
}

PG_OS_USER=${SEGFLOW_PG_OS_USER:-postgres}
cmd=${1:-}
BIN=$(pg_bin_dir)

case "$cmd" in
  start)
    [[ $# -eq 4 ]] || die "usage: $0 start DATA_DIR SOCKET_DIR LOG_FILE"
    data=$(realpath -m "$2"); sockets=$(realpath -m "$3"); log=$(realpath -m "$4")
    : "${SEGFLOW_PG_PORT:?set SEGFLOW_PG_PORT}" "${SEGFLOW_PG_PASSWORD:?set SEGFLOW_PG_PASSWORD}"
    user=${SEGFLOW_PG_USER:-dagster}; db=${SEGFLOW_PG_DB:-dagster}
    ensure_os_user
    if is_running "$data"; then
      echo "postgres: already running ($data)"
    else
      mkdir -p "$data" "$sockets" "$(dirname "$log")"
      touch "$log"
      give_to_pg "$data" "$sockets" "$log"
      chmod 700 "$data" "$sockets"
      as_pg test -w "$data" || die "$PG_OS_USER cannot write $data: a parent directory is not traversable by it"
      if [[ ! -f $data/PG_VERSION ]]; then
        pwfile=$(mktemp "$sockets/.pw.XXXXXX")
        printf '%s\n' "$SEGFLOW_PG_PASSWORD" >"$pwfile"
        give_to_pg "$pwfile"
        as_pg "$BIN/initdb" -D "$data" --username="$user" --pwfile="$pwfile" --auth=scram-sha-256 \
          --encoding=UTF8 --locale=C.UTF-8 >>"$log" 2>&1 || { rm -f "$pwfile"; die "initdb failed, see $log"; }
        rm -f "$pwfile"
      fi
      as_pg "$BIN/pg_ctl" -D "$data" -l "$log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $SEGFLOW_PG_PORT -k $sockets -c max_connections=200" start >/dev/null \
        || die "PostgreSQL did not start, see $log"
      echo "postgres: started on 127.0.0.1:$SEGFLOW_PG_PORT (data $data, log $log)"
    fi
    psql=$(find_bin psql || echo "$BIN/psql")
    export PGPASSWORD=$SEGFLOW_PG_PASSWORD
    exists=$("$psql" -h 127.0.0.1 -p "$SEGFLOW_PG_PORT" -U "$user" -d postgres -tAc \
      "select 1 from pg_database where datname = '$db'")
    if [[ $exists != 1 ]]; then
      "$psql" -h 127.0.0.1 -p "$SEGFLOW_PG_PORT" -U "$user" -d postgres -qc "create database \"$db\"" \
        || die "cannot create database $db"
      echo "postgres: created database $db"
    fi
    ;;
  stop)
    [[ $# -eq 2 ]] || die "usage: $0 stop DATA_DIR"
    data=$(realpath -m "$2")
    if is_running "$data"; then
      as_pg "$BIN/pg_ctl" -D "$data" -m fast -w -t 60 stop >/dev/null
      echo "postgres: stopped ($data)"
    else
      echo "postgres: not running ($data)"
    fi
    ;;
  status)
    [[ $# -eq 2 ]] || die "usage: $0 status DATA_DIR"
    if is_running "$(realpath -m "$2")"; then echo "postgres: running"; else echo "postgres: stopped"; exit 3; fi
    ;;
  *)
    die "usage: $0 start DATA_DIR SOCKET_DIR LOG_FILE | stop DATA_DIR | status DATA_DIR"
    ;;
esac

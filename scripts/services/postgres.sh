#!/usr/bin/env bash
# Local PostgreSQL for the Django database of the full pipeline (tests and
# `make run-full`): Debian's postgresql binaries run as our own cluster under
# var/ (initdb'd once, owned by the postgres system user), not the system
# service. Creates the role chat/chat (CREATEDB) and the database chat.
#
#   scripts/services/postgres.sh {install|start|stop|restart|status}
#
# Env: POSTGRES_PORT (5432), POSTGRES_START_TIMEOUT (60 s), CHAT_VAR_DIR
SVC_NAME=postgres
# shellcheck source=lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

POSTGRES_PORT="${POSTGRES_PORT:-5432}"
POSTGRES_START_TIMEOUT="${POSTGRES_START_TIMEOUT:-60}"
POSTGRES_USER_NAME=chat
POSTGRES_PASSWORD=chat

svc_dirs postgres
SVC_PORT="$POSTGRES_PORT"
PGDATA="$SVC_DATA/cluster"
LOG_FILE="$SVC_LOGS/postgres.log"

pg_bin() {
  PG_BIN=""
  local dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [[ -x "$dir/initdb" && -x "$dir/pg_ctl" ]]; then PG_BIN="$dir"; return 0; fi
  done
  return 1
}

install() {
  if pg_bin; then
    log "postgresql present: $("$PG_BIN/postgres" --version) ($PG_BIN)"
    return 0
  fi
  [[ "$(id -u)" == 0 ]] || die "postgresql is missing; install it as root: apt-get install -y postgresql"
  log "installing postgresql with apt-get (log: $SVC_LOGS/apt.log)"
  export DEBIAN_FRONTEND=noninteractive
  # Keep the package from starting the system-wide cluster on port 5432.
  local policy=""
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy"
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  if ! apt-get install -y --no-install-recommends postgresql >"$SVC_LOGS/apt.log" 2>&1; then
    log "apt-get install failed, running apt-get update first"
    apt-get update >>"$SVC_LOGS/apt.log" 2>&1 || true
    if ! apt-get install -y --no-install-recommends postgresql >>"$SVC_LOGS/apt.log" 2>&1; then
      tail_logs 20 "$SVC_LOGS/apt.log"
      die "could not install postgresql with apt-get (see $SVC_LOGS/apt.log)"
    fi
  fi
  if [[ -n "$policy" ]]; then rm -f "$policy"; trap - EXIT; fi
  pg_bin || die "postgresql binaries not found under /usr/lib/postgresql after apt-get install"
  ok "installed $("$PG_BIN/postgres" --version)"
}

# PostgreSQL refuses to run as root: run its tools as the postgres system user.
as_postgres() {
  if [[ "$(id -un)" == postgres ]]; then "$@"; else runuser -u postgres -- "$@"; fi
}

init_cluster() {
  [[ -s "$PGDATA/PG_VERSION" ]] && return 0
  log "initialising a cluster in $PGDATA"
  mkdir -p "$PGDATA" "$SVC_RUN/socket"
  chown -R postgres:postgres "$SVC_DATA" "$SVC_RUN/socket" "$SVC_LOGS"
  chmod 700 "$PGDATA"
  if ! as_postgres "$PG_BIN/initdb" -D "$PGDATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      -E UTF8 --locale=C.UTF-8 >"$SVC_LOGS/initdb.log" 2>&1; then
    tail_logs 30 "$SVC_LOGS/initdb.log"
    die "initdb failed (see $SVC_LOGS/initdb.log)"
  fi
}

ready() { as_postgres "$PG_BIN/pg_isready" -q -h "$SERVICES_BIND" -p "$POSTGRES_PORT"; }

ensure_role() {
  local psql=(as_postgres "$PG_BIN/psql" -h "$SVC_RUN/socket" -p "$POSTGRES_PORT" -U postgres -v ON_ERROR_STOP=1 -qtA)
  if [[ "$("${psql[@]}" -d postgres -c "SELECT 1 FROM pg_roles WHERE rolname='$POSTGRES_USER_NAME'")" != 1 ]]; then
    "${psql[@]}" -d postgres -c "CREATE ROLE $POSTGRES_USER_NAME LOGIN CREATEDB PASSWORD '$POSTGRES_PASSWORD'"
    log "created role $POSTGRES_USER_NAME"
  fi
  if [[ "$("${psql[@]}" -d postgres -c "SELECT 1 FROM pg_database WHERE datname='chat'")" != 1 ]]; then
    "${psql[@]}" -d postgres -c "CREATE DATABASE chat OWNER $POSTGRES_USER_NAME"
    log "created database chat"
  fi
}

start() {
  local pid rc start_ts
  install
  svc_lock
  if pid="$(svc_pid)"; then
    rc=0; check_port "$POSTGRES_PORT" "postgres" POSTGRES_PORT "$pid" || rc=$?
    if (( rc == 10 )) && ready; then
      ensure_role
      ok "postgres is already running (pid $pid) on $SERVICES_BIND:$POSTGRES_PORT"
      return 0
    fi
    die "postgres (pid $pid) is running but not answering on $SERVICES_BIND:$POSTGRES_PORT; try: $0 restart"
  fi
  check_port "$POSTGRES_PORT" "postgres" POSTGRES_PORT
  init_cluster
  mkdir -p "$SVC_RUN/socket"
  chown postgres:postgres "$SVC_RUN/socket" "$SVC_LOGS"
  touch "$LOG_FILE" && chown postgres:postgres "$LOG_FILE"
  log "starting postgres on $SERVICES_BIND:$POSTGRES_PORT"
  start_ts="$(now)"
  cd "$SVC_DIR"
  # Small, test-friendly settings: durability is not needed for throwaway data.
  if ! as_postgres "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$LOG_FILE" -w -t "$POSTGRES_START_TIMEOUT" \
      -o "-c listen_addresses=$SERVICES_BIND -p $POSTGRES_PORT -k $SVC_RUN/socket -c max_connections=200 -c shared_buffers=128MB -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
      start >"$SVC_LOGS/pg_ctl.log" 2>&1 9>&-; then
    tail_logs 30 "$LOG_FILE" "$SVC_LOGS/pg_ctl.log"
    explain_failure 0 "$LOG_FILE"
    die "postgres failed to start (logs: $SVC_LOGS)"
  fi
  head -n1 "$PGDATA/postmaster.pid" >"$SVC_PIDFILE"
  pid="$(svc_pid)" || die "postgres started but its pid is unknown"
  ensure_role
  ok "postgres ready on $SERVICES_BIND:$POSTGRES_PORT in $(elapsed "$start_ts")s (pid $pid, rss $(rss_mb "$pid"), logs $SVC_LOGS)"
}

stop() {
  svc_lock
  if ! svc_pid >/dev/null; then
    rm -f "$SVC_PIDFILE"
    log "postgres is not running"
    return 0
  fi
  pg_bin || die "postgresql binaries not found"
  local start_ts
  start_ts="$(now)"
  # Fast shutdown: disconnect clients instead of waiting for them.
  as_postgres "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w -t 30 stop >>"$SVC_LOGS/pg_ctl.log" 2>&1 || {
    warn "pg_ctl stop failed; sending SIGQUIT"
    kill -QUIT "$(svc_pid)" 2>/dev/null || true
  }
  rm -f "$SVC_PIDFILE"
  ok "postgres stopped in $(elapsed "$start_ts")s"
}

status() { svc_status "$POSTGRES_PORT"; }

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  status) status ;;
  *) usage_exit ;;
esac

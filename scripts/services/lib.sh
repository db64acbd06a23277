# shellcheck shell=bash
# Shared helpers for scripts/services/*.sh (sourced, not executed).
#
# Layout: $CHAT_VAR_DIR/services/<name>/{conf,data,logs,lib,maven,run}
# CHAT_VAR_DIR defaults to <repo>/var.

set -euo pipefail

SERVICES_SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SERVICES_SCRIPT_DIR/../.." && pwd)"
CHAT_VAR_DIR="${CHAT_VAR_DIR:-$REPO_ROOT/var}"
SERVICES_VAR_DIR="$CHAT_VAR_DIR/services"
SERVICES_BIND="127.0.0.1"
# JVM servers run with the C1 JIT only by default: starts ~40% faster on this
# 2-core machine; set SERVICES_C1_ONLY=0 for the full tiered JIT (benchmarks).
SERVICES_C1_ONLY="${SERVICES_C1_ONLY:-1}"
# shellcheck disable=SC2034 # used by kafka.sh / cassandra.sh
if [[ "$SERVICES_C1_ONLY" == 1 ]]; then JIT_OPTS=(-XX:TieredStopAtLevel=1); else JIT_OPTS=(); fi

# ---------------------------------------------------------------- logging
if [[ -t 1 ]]; then
  _C_RED=$'\e[31m'; _C_GRN=$'\e[32m'; _C_YEL=$'\e[33m'; _C_DIM=$'\e[2m'; _C_OFF=$'\e[0m'
else
  _C_RED=""; _C_GRN=""; _C_YEL=""; _C_DIM=""; _C_OFF=""
fi

SVC_NAME="${SVC_NAME:-services}"

log()  { printf '%s[%s %s]%s %s\n' "$_C_DIM" "$(date +%H:%M:%S)" "$SVC_NAME" "$_C_OFF" "$*"; }
ok()   { printf '%s[%s %s]%s %s%s%s\n' "$_C_DIM" "$(date +%H:%M:%S)" "$SVC_NAME" "$_C_OFF" "$_C_GRN" "$*" "$_C_OFF"; }
warn() { printf '%s[%s %s]%s %sWARNING: %s%s\n' "$_C_DIM" "$(date +%H:%M:%S)" "$SVC_NAME" "$_C_OFF" "$_C_YEL" "$*" "$_C_OFF" >&2; }
err()  { printf '%s[%s %s]%s %sERROR: %s%s\n' "$_C_DIM" "$(date +%H:%M:%S)" "$SVC_NAME" "$_C_OFF" "$_C_RED" "$*" "$_C_OFF" >&2; }
die()  { err "$*"; exit 1; }

now() { printf '%s' "${EPOCHREALTIME:-$(date +%s.%N)}"; }
# elapsed START -> "12.3"
elapsed() { awk -v s="$1" -v e="$(now)" 'BEGIN { printf "%.1f", e - s }'; }

# Remember the current size of log files so that failure reports only show
# (and only scan) what the current start wrote.
declare -A _LOG_OFFSET=()
mark_logs() {
  local f
  for f in "$@"; do
    _LOG_OFFSET[$f]="$(stat -c %s "$f" 2>/dev/null || echo 0)"
  done
}

# Print the part of log file F written since mark_logs (whole file if rotated).
log_since_mark() {
  local f="$1" off="${_LOG_OFFSET[$1]:-0}" size
  size="$(stat -c %s "$f" 2>/dev/null || echo 0)"
  (( size >= off )) || off=0
  tail -c +"$((off + 1))" "$f" 2>/dev/null
}

# Print the last N lines (cut to 300 chars) of every given log file that has
# new content.
tail_logs() {
  local n="$1"; shift
  local f
  for f in "$@"; do
    [[ -s "$f" ]] || continue
    [[ "$(log_since_mark "$f" | wc -c)" -gt 1 ]] || continue
    printf '%s----- last %s lines of %s -----%s\n' "$_C_YEL" "$n" "$f" "$_C_OFF" >&2
    log_since_mark "$f" | tail -n "$n" | cut -c1-300 >&2
    printf '%s----- end of %s -----%s\n' "$_C_YEL" "$f" "$_C_OFF" >&2
  done
}

# Explain a failed start from the logs / exit status (OOM, bind errors, ...).
explain_failure() {
  local status="$1"; shift
  local f text=""
  if [[ "$status" == 137 ]]; then
    err "process was killed with SIGKILL (exit 137): most likely the kernel OOM killer; check free memory (free -h) or lower the heap"
  fi
  for f in "$@"; do
    [[ -s "$f" ]] && text+="$(log_since_mark "$f")"$'\n'
  done
  if grep -qE 'OutOfMemoryError: (Java heap space|GC overhead)' <<<"$text"; then
    err "the JVM ran out of heap: raise the heap size (${HEAP_VAR:-heap} env variable)"
  # The thrown error, not the JVM flag -XX:+ExitOnOutOfMemoryError that
  # Cassandra logs among its arguments on every start.
  elif grep -qE 'java\.lang\.OutOfMemoryError|Cannot allocate memory|insufficient memory|Could not reserve enough space' <<<"$text"; then
    err "out of memory: free some memory or lower the heap size (${HEAP_VAR:-heap} env variable)"
  fi
  if grep -qE 'Detected unreadable sstables' <<<"$text"; then
    err "the data directory holds sstables this configuration cannot read (written by a newer version or storage_compatibility_mode): point the service at another data directory or remove $SVC_DATA"
  fi
  if grep -qE 'Address already in use|BindException' <<<"$text"; then
    err "a port is already in use (see the log lines above)"
  fi
}

# ---------------------------------------------------------------- dirs / pids
svc_dirs() {
  # svc_dirs NAME -> sets SVC_DIR, SVC_CONF, SVC_DATA, SVC_LOGS, SVC_LIB, SVC_RUN, SVC_PIDFILE
  SVC_DIR="$SERVICES_VAR_DIR/$1"
  SVC_CONF="$SVC_DIR/conf"
  SVC_DATA="$SVC_DIR/data"
  SVC_LOGS="$SVC_DIR/logs"
  SVC_LIB="$SVC_DIR/lib"
  SVC_RUN="$SVC_DIR/run"
  SVC_PIDFILE="$SVC_RUN/$1.pid"
  mkdir -p "$SVC_CONF" "$SVC_DATA" "$SVC_LOGS" "$SVC_RUN"
  # Keep runtime files out of git when the var dir lives inside the repo.
  if [[ ! -e "$SERVICES_VAR_DIR/.gitignore" ]]; then
    printf '# runtime data of scripts/services/*.sh\n*\n' >"$SERVICES_VAR_DIR/.gitignore"
  fi
}

# Serialise start/stop of one service (two concurrent "start" calls are safe).
svc_lock() {
  # Child servers must be started with 9>&- so they do not inherit the lock.
  exec 9>"$SVC_RUN/.lock"
  flock -n 9 && return 0
  log "waiting for another start/stop of $SVC_NAME to finish (lock $SVC_RUN/.lock)"
  if ! flock -w 300 9; then
    die "timed out waiting for the lock $SVC_RUN/.lock (another start/stop is running?)"
  fi
}

# Is PID alive and one of ours (its cwd is inside SVC_DIR)?  All our servers
# are started with cwd = $SVC_DIR (redis chdirs into $SVC_DIR/data).
pid_is_ours() {
  local pid="$1" cwd
  [[ -n "$pid" && -d "/proc/$pid" ]] || return 1
  [[ "$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null)" != Z ]] || return 1
  cwd="$(readlink "/proc/$pid/cwd" 2>/dev/null || true)"
  [[ "$cwd" == "$SVC_DIR" || "$cwd" == "$SVC_DIR"/* ]]
}

# Print the pid of our running server (empty + status 1 when not running).
# If the pid file is missing or stale but the process listening on SVC_PORT
# is one of ours (e.g. run/ was wiped), adopt it and rewrite the pid file.
svc_pid() {
  local pid="" p
  [[ -s "$SVC_PIDFILE" ]] && pid="$(tr -dc '0-9' <"$SVC_PIDFILE")"
  if pid_is_ours "$pid"; then
    printf '%s' "$pid"
    return 0
  fi
  if [[ -n "${SVC_PORT:-}" ]]; then
    for p in $(port_pids "$SVC_PORT"); do
      if pid_is_ours "$p"; then
        echo "$p" >"$SVC_PIDFILE"
        printf '%s' "$p"
        return 0
      fi
    done
  fi
  return 1
}

rss_mb() {
  local kb
  kb="$(awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || true)"
  [[ -n "$kb" ]] && awk -v k="$kb" 'BEGIN { printf "%.0f MiB", k / 1024 }' || printf '?'
}

# ---------------------------------------------------------------- ports
# Print the pids listening on TCP PORT (any address); empty if none/unknown.
port_pids() {
  local port="$1"
  if command -v ss >/dev/null 2>&1; then
    { ss -Hltnp "sport = :$port" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u | tr '\n' ' '; } || true
  fi
}

port_listening() {
  local port="$1"
  if command -v ss >/dev/null 2>&1; then
    [[ -n "$(ss -Hltn "sport = :$port" 2>/dev/null)" ]]
  else
    (exec 3<>"/dev/tcp/$SERVICES_BIND/$port") 2>/dev/null
  fi
}

# Fail clearly when PORT is taken by a process that is not OUR_PID.
# Returns 0 when free, 10 when it is held by OUR_PID.
check_port() {
  local port="$1" what="$2" var="$3" our_pid="${4:-}" pids p cmd
  port_listening "$port" || return 0
  pids="$(port_pids "$port")"
  if [[ -n "$our_pid" ]]; then
    for p in $pids; do [[ "$p" == "$our_pid" ]] && return 10; done
  fi
  if [[ -n "${pids// /}" ]]; then
    for p in $pids; do
      cmd="$(tr '\0\n' '  ' <"/proc/$p/cmdline" 2>/dev/null | cut -c1-160 || true)"
      err "port $port ($what) is already taken by pid $p: ${cmd:-?}"
    done
  else
    err "port $port ($what) is already taken by another process"
  fi
  die "cannot start $SVC_NAME: free port $port or choose another one with $var=<port>"
}

wait_port_closed() {
  local port="$1" timeout="$2" start
  start="$(now)"
  while port_listening "$port"; do
    awk -v s="$start" -v e="$(now)" -v t="$timeout" 'BEGIN { exit !(e - s > t) }' && return 1
    sleep 0.2
  done
}

# ---------------------------------------------------------------- timer slack
# How late the kernel may fire a thread's timed sleep to batch wake-ups
# (prctl(2) PR_SET_TIMERSLACK; Linux's default is 50 us). Threads inherit it
# from the thread that made them, and a program from the shell that ran it.

# timer_slack_ns NAME VALUE -> VALUE (whole microseconds; 0 = the kernel's
# default) in nanoseconds; dies naming NAME on anything else.
timer_slack_ns() {
  local name="$1" value="$2"
  [[ "$value" =~ ^[0-9]+$ ]] || die "$name must be a whole number of microseconds (0 = the kernel's default), not '$value'"
  (( ${#value} <= 7 && 10#$value <= 1000000 )) || die "$name is at most 1000000 (1 s), not $value"
  echo $(( 10#$value * 1000 ))
}

# set_timer_slack NS -> this shell's timer slack, which what it runs next
# inherits (use in the subshell that execs the server). 0 leaves it alone.
set_timer_slack() {
  local ns="$1"
  (( ns > 0 )) || return 0
  # Without /proc/self/timerslack_ns (Linux < 4.6) the server runs with the kernel's default.
  { echo "$ns" >/proc/self/timerslack_ns; } 2>/dev/null \
    || warn "could not set the timer slack to $ns ns; starting with the kernel's default"
}

# ---------------------------------------------------------------- tools
find_java() {
  if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
    JAVA="$JAVA_HOME/bin/java"
  elif command -v java >/dev/null 2>&1; then
    JAVA="$(command -v java)"
  else
    die "Java not found: install a JDK 17 (apt-get install -y openjdk-17-jdk-headless) or set JAVA_HOME"
  fi
}

# require_java MIN [MAX] -> sets JAVA, JAVA_MAJOR
require_java() {
  local min="$1" max="${2:-}" v
  find_java
  v="$("$JAVA" -XshowSettings:properties -version 2>&1 | awk -F'= ' '/java.specification.version =/ { print $2; exit }')"
  JAVA_MAJOR="${v#1.}"; JAVA_MAJOR="${JAVA_MAJOR%%.*}"
  [[ "$JAVA_MAJOR" =~ ^[0-9]+$ ]] || die "could not determine the version of $JAVA"
  if (( JAVA_MAJOR < min )); then
    die "$SVC_NAME needs Java >= $min but $JAVA is Java $JAVA_MAJOR: install openjdk-17-jdk-headless or set JAVA_HOME"
  fi
  if [[ -n "$max" ]] && (( JAVA_MAJOR > max )); then
    warn "$SVC_NAME is supported up to Java $max; $JAVA is Java $JAVA_MAJOR (set JAVA_HOME to a JDK 17 if it fails)"
  fi
}

require_python() {
  PYTHON="${PYTHON:-$(command -v python3 || true)}"
  [[ -n "$PYTHON" ]] || die "python3 not found (needed for the readiness probes in $SERVICES_SCRIPT_DIR/probe.py)"
}

probe() { "$PYTHON" "$SERVICES_SCRIPT_DIR/probe.py" "$@"; }

require_cmd() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' not found: $2"
}

# mvn_resolve STAMP_KEY GROUP:ARTIFACT:VERSION...
# Resolves the artifacts and their runtime dependencies into $SVC_LIB with
# maven-dependency-plugin (jars are cached in ~/.m2). Skipped when the stamp
# file matches STAMP_KEY and every jar it lists is present.
MVN_DEP_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
mvn_resolve() {
  local key="$1"; shift
  local stamp="$SVC_LIB/.stamp" start jar missing=0 coord g a v deps="" n
  if [[ -f "$stamp" && "$(head -n1 "$stamp")" == "$key" ]]; then
    while IFS= read -r jar; do
      [[ -f "$SVC_LIB/$jar" ]] || { missing=1; break; }
    done < <(tail -n +2 "$stamp")
    if (( missing == 0 )); then
      log "jars already installed ($(( $(wc -l <"$stamp") - 1 )) in $SVC_LIB)"
      return 0
    fi
    warn "lib dir $SVC_LIB is incomplete, resolving again"
  fi
  require_java 17
  require_cmd mvn "install Maven (apt-get install -y maven)"
  for coord in "$@"; do
    IFS=: read -r g a v <<<"$coord"
    deps+="<dependency><groupId>$g</groupId><artifactId>$a</artifactId><version>$v</version></dependency>"
  done
  mkdir -p "$SVC_DIR/maven"
  cat >"$SVC_DIR/maven/pom.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- generated by scripts/services/lib.sh: runtime classpath of $SVC_NAME -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.chat.services</groupId>
  <artifactId>$SVC_NAME-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>$deps</dependencies>
</project>
EOF
  log "resolving $* with Maven (first run downloads into ~/.m2; log: $SVC_LOGS/mvn.log)"
  start="$(now)"
  rm -rf "$SVC_LIB.new"
  if ! mvn -B -ntp -f "$SVC_DIR/maven/pom.xml" "$MVN_DEP_PLUGIN:copy-dependencies" \
      -DincludeScope=runtime -DoutputDirectory="$SVC_LIB.new" >"$SVC_LOGS/mvn.log" 2>&1; then
    tail_logs 40 "$SVC_LOGS/mvn.log"
    die "Maven could not resolve $* (is Maven Central reachable? see $SVC_LOGS/mvn.log)"
  fi
  rm -rf "$SVC_LIB"
  mv "$SVC_LIB.new" "$SVC_LIB"
  { printf '%s\n' "$key"; (cd "$SVC_LIB" && ls -1 -- *.jar); } >"$stamp.tmp"
  mv "$stamp.tmp" "$stamp"
  n="$(( $(wc -l <"$stamp") - 1 ))"
  ok "installed $n jars ($(du -sh "$SVC_LIB" | cut -f1)) into $SVC_LIB in $(elapsed "$start")s"
}

# ---------------------------------------------------------------- start / stop
# wait_ready TIMEOUT PID PROBE_FN LOGS... : poll PROBE_FN until it succeeds,
# the process dies or TIMEOUT seconds pass. Prints the tail of LOGS on failure.
wait_ready() {
  local timeout="$1" pid="$2" fn="$3"; shift 3
  local start last_dot status
  start="$(now)"; last_dot="$start"
  while :; do
    if ! kill -0 "$pid" 2>/dev/null || [[ "$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null)" == Z ]]; then
      status=0; wait "$pid" 2>/dev/null || status=$?
      # 127: not our child (started by an earlier call), status unknown
      [[ "$status" != 127 ]] || status="unknown"
      err "$SVC_NAME (pid $pid) exited during startup (exit status $status)"
      tail_logs 40 "$@"
      explain_failure "$status" "$@"
      return 1
    fi
    if "$fn" >/dev/null 2>&1; then
      return 0
    fi
    if awk -v s="$start" -v e="$(now)" -v t="$timeout" 'BEGIN { exit !(e - s > t) }'; then
      err "$SVC_NAME did not become ready within ${timeout}s (pid $pid still running; stopping it)"
      tail_logs 40 "$@"
      explain_failure 0 "$@"
      stop_pid "$pid" 30 >/dev/null 2>&1 || true
      return 1
    fi
    if awk -v s="$last_dot" -v e="$(now)" 'BEGIN { exit !(e - s >= 5) }'; then
      log "still waiting for $SVC_NAME ($(elapsed "$start")s)..."
      last_dot="$(now)"
    fi
    sleep 0.25
  done
}

# stop_pid PID TIMEOUT: SIGTERM, then SIGKILL after TIMEOUT seconds.
stop_pid() {
  local pid="$1" timeout="$2" start
  start="$(now)"
  kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null && [[ "$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null)" != Z ]]; do
    if awk -v s="$start" -v e="$(now)" -v t="$timeout" 'BEGIN { exit !(e - s > t) }'; then
      warn "$SVC_NAME (pid $pid) did not stop within ${timeout}s, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
      break
    fi
    sleep 0.2
  done
  STOP_SECS="$(elapsed "$start")"
}

# Generic stop/status used by the service scripts.
svc_stop() {
  local timeout="$1" pid
  svc_lock
  if ! pid="$(svc_pid)"; then
    rm -f "$SVC_PIDFILE"
    log "$SVC_NAME is not running"
    return 0
  fi
  log "stopping $SVC_NAME (pid $pid)..."
  stop_pid "$pid" "$timeout"
  rm -f "$SVC_PIDFILE"
  ok "$SVC_NAME stopped in ${STOP_SECS}s"
}

# svc_status PORT_DESCRIPTION -> one line; exit 0 running, 3 stopped
svc_status() {
  local ports="$1" pid
  if pid="$(svc_pid)"; then
    printf '%-10s %-8s pid=%-8s port=%-18s rss=%s\n' "$SVC_NAME" running "$pid" "$ports" "$(rss_mb "$pid")"
    return 0
  fi
  printf '%-10s %-8s pid=%-8s port=%-18s rss=%s\n' "$SVC_NAME" stopped - "$ports" -
  return 3
}

usage_exit() {
  echo "usage: $(basename "$0") {install|start|stop|restart|status}" >&2
  exit 2
}

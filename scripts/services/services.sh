#!/usr/bin/env bash
# Start/stop/inspect the local dev/test servers (Redis, Kafka, Cassandra).
#
#   scripts/services/services.sh up     [redis] [kafka] [cassandra]
#   scripts/services/services.sh down   [names...]
#   scripts/services/services.sh status [names...]
#   scripts/services/services.sh install [names...]
#
# Without names: all three. `up` is idempotent (running servers are left
# alone) and exits non-zero if any server fails to start; `status` exits 3
# when any of the named servers is stopped. See docs/services.md.
SVC_NAME=services
# shellcheck source=lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

ALL=(redis postgres kafka cassandra)

usage() {
  echo "usage: $(basename "$0") {up|down|status|install} [redis|postgres|kafka|cassandra ...]" >&2
  exit 2
}

cmd="${1:-}"; [[ -n "$cmd" ]] || usage
shift
names=("$@")
(( ${#names[@]} )) || names=("${ALL[@]}")
for n in "${names[@]}"; do
  case "$n" in redis|postgres|kafka|cassandra) ;; *) err "unknown service '$n'"; usage ;; esac
done

run() { "$SERVICES_SCRIPT_DIR/$1.sh" "$2"; }

case "$cmd" in
  up|start)
    t0="$(now)"; failed=()
    log "starting: ${names[*]} (var dir: $SERVICES_VAR_DIR)"
    for n in "${names[@]}"; do
      run "$n" start || failed+=("$n")
    done
    if (( ${#failed[@]} )); then
      die "failed to start: ${failed[*]} (see the messages above and $SERVICES_VAR_DIR/<name>/logs/)"
    fi
    ok "all up in $(elapsed "$t0")s: ${names[*]}"
    ;;
  down|stop)
    failed=()
    for (( i=${#names[@]}-1; i>=0; i-- )); do
      run "${names[$i]}" stop || failed+=("${names[$i]}")
    done
    (( ${#failed[@]} == 0 )) || die "failed to stop: ${failed[*]}"
    ok "all down: ${names[*]}"
    ;;
  status)
    rc=0
    for n in "${names[@]}"; do
      run "$n" status || rc=3
    done
    exit "$rc"
    ;;
  install)
    for n in "${names[@]}"; do run "$n" install; done
    ;;
  *) usage ;;
esac

#!/bin/bash
# `make test`: run the test suites against throwaway PostgreSQL and Redis
# instances on free loopback ports, then stop them and delete their data.
#
#   scripts/test.sh                      every suite under t/
#   scripts/test.sh t/ws_frames.t        one suite
#   scripts/test.sh -v t/ws_frames.t     prove's options pass through
#   PROVE_ARGS=-v scripts/test.sh        the same, from make
#
# The suites find the stack in the environment: CHAT_NGINX, CHAT_MODULES,
# CHAT_PG_DSN ("host=... port=... dbname=chat user=chat") and CHAT_REDIS
# (host:port); CHAT_PG_DIR, CHAT_PG_PORT, CHAT_REDIS_DIR and CHAT_REDIS_PORT
# let a suite stop and restart them.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

cd "$CHAT_TOP"

tmp=

# shellcheck disable=SC2317  # called from the traps
stop_all() {
    [ -n "$tmp" ] || return 0
    redis_stop "$tmp/redis" || true
    pg_stop "$tmp/pg" >/dev/null || true
    rm -rf "$tmp"
    tmp=
}

trap 'exit 130' INT
trap 'exit 143' TERM
trap 'stop_all' EXIT


echo "# $("$NGINX_BIN" -v 2>&1)"
echo "# $("$PG_BIN/postgres" --version)"
echo "# $("$REDIS_SERVER" --version | cut -d' ' -f1-3)"

for m in ngx_chat_module ngx_asset_module; do
    [ -f "$CHAT_MODULES_DIR/$m.so" ] || log "warning: no $CHAT_MODULES_DIR/$m.so"
done

# Node.js tools of the suites (t/node: s3rver for t/asset_s3.t,
# playwright-core for t/browser.t, ws for t/chaos.t), when the machine has
# node and npm; the suites that need them skip otherwise.
if command -v npm >/dev/null && command -v node >/dev/null \
   && { [ ! -d t/node/node_modules/s3rver ] \
        || [ ! -d t/node/node_modules/playwright-core ] \
        || [ ! -d t/node/node_modules/ws ]; }
then
    log "installing t/node's packages (npm)"
    (cd t/node && npm install --no-audit --no-fund --silent) \
        || log "warning: npm install in t/node failed: t/asset_s3.t," \
               "t/browser.t and t/chaos.t skip"
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/chat-test.XXXXXX")
chmod 755 "$tmp"          # user postgres works in $tmp/pg

pg_port=$(free_port)
pg_start "$tmp/pg" "$pg_port" test
redis_port=$(free_port)
redis_start "$tmp/redis" "$redis_port" test

export CHAT_NGINX=$NGINX_BIN
export CHAT_MODULES=$CHAT_MODULES_DIR
export CHAT_PG_DSN="host=127.0.0.1 port=$pg_port dbname=chat user=chat"
export CHAT_REDIS=127.0.0.1:$redis_port
# For the fault suites, which stop and start the two services mid-test
# (Test::Chat::Nginx's pg_stop/pg_start/redis_stop/redis_start).
export CHAT_PG_DIR=$tmp/pg CHAT_PG_PORT=$pg_port
export CHAT_REDIS_DIR=$tmp/redis CHAT_REDIS_PORT=$redis_port

pg_migrate "$CHAT_PG_DSN"

# Without a file or directory among the arguments, run all of t/.
args=("$@")
paths=0
for a in "${args[@]}"; do
    [ -e "$a" ] && paths=1
done
[ "$paths" = 1 ] || args+=(t/)

status=0
# shellcheck disable=SC2086  # PROVE_ARGS is split on purpose
prove -j1 -r -I t/lib ${PROVE_ARGS:-} "${args[@]}" || status=$?
exit "$status"

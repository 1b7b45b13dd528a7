#!/bin/bash
# `make run`: the whole stack on this machine, in the foreground, until
# Ctrl-C. PostgreSQL, Redis and nginx keep their data and logs under var/,
# so a second run finds the accounts and messages of the first.
#
#   var/pg      PostgreSQL cluster, 127.0.0.1:55432 (log: var/pg/log)
#   var/redis   Redis, 127.0.0.1:56379, append-only file (log: redis.log)
#   var/nginx   nginx's logs, pid and temp files; nginx runs on
#               127.0.0.1:8080 with conf/nginx.conf and the repository as
#               its prefix
set -euo pipefail

if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then
    exec sudo "$0" "$@"
fi

# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

top=$CHAT_TOP
var=$top/var
pg_port=55432
redis_port=56379
http_port=8080
dsn="host=127.0.0.1 port=$pg_port dbname=chat user=chat"

for m in ngx_chat_module ngx_asset_module; do
    [ -f "$CHAT_MODULES_DIR/$m.so" ] || die "no $m.so: run 'make run'"
done


# Leftovers of a run that was killed before it could clean up.
nginx_stop "$var/nginx/nginx.pid"
redis_stop "$var/redis"
pg_stop "$var/pg"

if ! port_is_free "$http_port"; then
    die "port $http_port is in use: $(ss -Htlnp "( sport = :$http_port )")"
fi


nginx_pid=
stopping=

# shellcheck disable=SC2317  # called from the traps
stop_all() {
    [ -z "$stopping" ] || return 0
    stopping=1
    trap '' INT TERM

    echo
    echo "stopping..."
    if [ -n "$nginx_pid" ] && kill -0 "$nginx_pid" 2>/dev/null; then
        kill -TERM "$nginx_pid" 2>/dev/null || true
        wait "$nginx_pid" 2>/dev/null || true
    fi
    redis_stop "$var/redis" || true
    pg_stop "$var/pg" || true

    cat <<END
stopped. Everything stays under $var:
  nginx       logs in var/nginx/logs/ (error.log, access.log)
  PostgreSQL  var/pg, log var/pg/log
  Redis       var/redis, log var/redis/redis.log
Delete var/ to start from scratch.
END
}

# Ctrl-C is how a run ends: not an error (make stays quiet).
trap 'stop_all; exit 0' INT
trap 'stop_all; exit 143' TERM
trap 'stop_all' EXIT


mkdir -p "$var/nginx/logs" "$var/nginx/tmp" "$var/blob"
chmod 755 "$var" "$var/nginx" "$var/nginx/tmp"

# the blob store (conf/nginx.conf, location /blob/): the workers write it
if [ "$(id -u)" = 0 ]; then
    chown nobody "$var/blob"
fi

pg_start "$var/pg" "$pg_port" run
pg_migrate "$dsn"
redis_start "$var/redis" "$redis_port" run

# Workers run as nobody: they must reach html/ (and so every directory
# above the repository).
if [ "$(id -u)" = 0 ] && ! runuser -u nobody -- test -r "$top/html/index.html"
then
    log "warning: user nobody cannot read $top/html: nginx will answer 403;" \
        "every directory above it needs o+x"
fi

"$NGINX_BIN" -p "$top/" -c "$top/conf/nginx.conf" -g 'daemon off;' &
nginx_pid=$!

up() {
    kill -0 "$nginx_pid" 2>/dev/null || return 2
    curl -s -o /dev/null "http://127.0.0.1:$http_port/"
}

tries=100
until up; do
    if ! kill -0 "$nginx_pid" 2>/dev/null; then
        wait "$nginx_pid" || true
        nginx_pid=
        die "nginx did not start (see above and var/nginx/logs/error.log)"
    fi
    tries=$((tries - 1))
    [ "$tries" -gt 0 ] || die "nginx does not answer on port $http_port"
    sleep 0.1
done

cat <<END

PostgreSQL  $dsn
Redis       127.0.0.1:$redis_port
nginx log   var/nginx/logs/error.log

open http://127.0.0.1:$http_port   (Ctrl-C stops everything)
END

status=0
wait "$nginx_pid" || status=$?
nginx_pid=
log "nginx exited (status $status); see var/nginx/logs/error.log"
exit "$status"

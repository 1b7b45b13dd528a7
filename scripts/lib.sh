# shellcheck shell=bash disable=SC2034
# Shared shell functions for scripts/run.sh and scripts/test.sh: start and
# stop the PostgreSQL, Redis and nginx instances the project runs against.
# Sourced, never executed; the caller sets -euo pipefail.
#
# Every service keeps all of its state (data, socket, pid file, log) in one
# directory and listens on 127.0.0.1 only, so nothing here touches or depends
# on the system's own nginx, Redis or PostgreSQL services.

CHAT_TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

NGINX_BIN=/usr/sbin/nginx
CHAT_MODULES_DIR="${CHAT_MODULES_DIR:-$CHAT_TOP/build/modules}"   # another build: compare
PG_BIN=/usr/lib/postgresql/15/bin
REDIS_SERVER=/usr/bin/redis-server
REDIS_CLI=/usr/bin/redis-cli


log() {
    printf '%s\n' "$*" >&2
}


die() {
    log "${0##*/}: $*"
    exit 1
}


# free_port: print a TCP port on 127.0.0.1 that nothing uses. Ports are
# drawn below Linux's ephemeral range (32768-60999), so an outgoing
# connection cannot take the port between this check and the bind.
free_port() {
    local port _

    for _ in $(seq 1 100); do
        port=$((20000 + RANDOM % 12000))
        if port_is_free "$port"; then
            echo "$port"
            return 0
        fi
    done

    log "free_port: no free port found"
    return 1
}


# port_is_free PORT: true when nothing listens on this TCP port. (Sockets in
# TIME_WAIT don't count: our servers all bind with SO_REUSEADDR.)
port_is_free() {
    if command -v ss >/dev/null 2>&1; then
        [ -z "$(ss -Htln "( sport = :$1 )" 2>/dev/null)" ]
    else
        ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
    fi
}


# wait_until SECONDS COMMAND...: run COMMAND every 0.1 s until it succeeds;
# fail after SECONDS.
wait_until() {
    local tries=$(($1 * 10))
    shift

    while ! "$@" >/dev/null 2>&1; do
        tries=$((tries - 1))
        if [ "$tries" -le 0 ]; then
            return 1
        fi
        sleep 0.1
    done
}


# alive PID: true while process PID runs (a zombie has exited).
alive() {
    local stat

    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ]
}


# pid_is PID NAME: true when process PID runs and its command name is NAME
# (a stale pid file may name a recycled pid).
pid_is() {
    [[ "$1" =~ ^[0-9]+$ ]] && alive "$1" || return 1
    [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ]
}


# wait_gone PID SECONDS: wait for a process that is not our child to exit.
wait_gone() {
    wait_until "$2" eval "! alive $1"
}


# ---------------------------------------------------------------- PostgreSQL

# PostgreSQL refuses to run as root: as root, its commands run as the
# postgres user (from /, since postgres may not enter the caller's
# directory); as anyone else, as that user.
as_pg() {
    if [ "$(id -u)" = 0 ]; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}


# pg_start DIR PORT [run|test]: create a cluster in DIR unless there is one,
# start it on 127.0.0.1:PORT with its socket in DIR and its log in DIR/log,
# and make sure role "chat" and database "chat" exist. "test" trades
# durability for speed: only for throwaway clusters.
pg_start() {
    local dir=$1 port=$2 mode=${3:-run} opts out

    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)

    case "$dir" in
    *[[:space:]\'\"\\]*)
        log "pg_start: $dir: no spaces or quotes, please"
        return 1
        ;;
    esac

    if [ "$(id -u)" = 0 ]; then
        chown postgres:postgres "$dir"
        if ! runuser -u postgres -- test -w "$dir"; then
            log "pg_start: user postgres cannot reach $dir;" \
                "every directory above it needs o+x (chmod o+x ...)"
            return 1
        fi
    fi
    chmod 700 "$dir"

    if [ ! -f "$dir/PG_VERSION" ]; then
        if ! out=$(as_pg "$PG_BIN/initdb" -D "$dir" -A trust -U postgres \
                       --encoding=UTF8 --locale=C.UTF-8 2>&1)
        then
            log "$out"
            log "pg_start: initdb failed in $dir"
            return 1
        fi
    fi

    if ! port_is_free "$port"; then
        log "pg_start: port $port is in use"
        return 1
    fi

    opts="-c listen_addresses=127.0.0.1 -p $port -k '$dir'"
    opts="$opts -c max_connections=200"
    if [ "$mode" = test ]; then
        opts="$opts -c fsync=off -c synchronous_commit=off"
        opts="$opts -c full_page_writes=off"
    fi

    if ! as_pg "$PG_BIN/pg_ctl" start -D "$dir" -l "$dir/log" -o "$opts" \
            -w -t 60 -s
    then
        log "pg_start: PostgreSQL did not start; the end of $dir/log:"
        tail -n 20 "$dir/log" >&2
        return 1
    fi

    if ! wait_until 30 "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port"; then
        log "pg_start: PostgreSQL on port $port is not ready; see $dir/log"
        return 1
    fi

    pg_admin "$port" "DO \$\$ BEGIN
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'chat') THEN
            CREATE ROLE chat LOGIN;
        END IF;
    END \$\$"

    if [ -z "$(pg_admin "$port" \
               "SELECT 1 FROM pg_database WHERE datname = 'chat'")" ]
    then
        pg_admin "$port" "CREATE DATABASE chat OWNER chat"
    fi
}


# pg_admin PORT SQL: run SQL as the superuser (trust over loopback).
pg_admin() {
    "$PG_BIN/psql" -X -q -t -A -v ON_ERROR_STOP=1 \
        -h 127.0.0.1 -p "$1" -U postgres -d postgres -c "$2"
}


# pg_stop DIR: stop the cluster in DIR if it runs (a fast shutdown: open
# sessions are rolled back, nothing committed is lost).
pg_stop() {
    local dir=$1

    [ -f "$dir/PG_VERSION" ] || return 0

    # pg_ctl status: 0 running, 3 not running.
    if as_pg "$PG_BIN/pg_ctl" status -D "$dir" >/dev/null 2>&1; then
        as_pg "$PG_BIN/pg_ctl" stop -D "$dir" -m fast -w -t 60 -s
    fi
}


# pg_migrate DSN: apply sql/NNN_*.sql in order, each at most once, each in
# one transaction together with its row in schema_migrations. The version
# is the file's number, so a file may be renamed but never renumbered.
pg_migrate() {
    local dsn=$1 file name version applied
    local -A seen=()
    local psql=("$PG_BIN/psql" -X -q -t -A -v ON_ERROR_STOP=1 -d "$dsn")

    PGOPTIONS="--client-min-messages=warning" "${psql[@]}" -c "
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version    text PRIMARY KEY,
            applied_at timestamptz DEFAULT now()
        )"

    applied=$("${psql[@]}" -c "SELECT version FROM schema_migrations")

    for file in "$CHAT_TOP"/sql/[0-9]*_*.sql; do
        [ -e "$file" ] || continue
        name=${file##*/}
        version=${name%%_*}

        if [[ ! "$version" =~ ^[0-9]+$ ]]; then
            log "pg_migrate: $name: expected NNN_name.sql"
            return 1
        fi
        if [ -n "${seen[$version]:-}" ]; then
            log "pg_migrate: $name and ${seen[$version]} share version $version"
            return 1
        fi
        seen[$version]=$name

        if grep -qx -- "$version" <<< "$applied"; then
            continue
        fi

        log "pg_migrate: applying $name"
        PGOPTIONS="--client-min-messages=warning" "${psql[@]}" \
            --single-transaction -f "$file" \
            -c "INSERT INTO schema_migrations (version) VALUES ('$version')" \
        || { log "pg_migrate: $name failed; nothing of it was applied"
             return 1; }
    done
}


# --------------------------------------------------------------------- Redis

# redis_start DIR PORT [run|test]: start redis-server on 127.0.0.1:PORT with
# its pid file, log and data in DIR. "run" keeps an append-only file so the
# data survives restarts; "test" keeps nothing.
redis_start() {
    local dir=$1 port=$2 mode=${3:-run} persist

    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)

    if ! port_is_free "$port"; then
        log "redis_start: port $port is in use"
        return 1
    fi

    if [ "$mode" = test ]; then
        persist=(--appendonly no)
    else
        persist=(--appendonly yes)
    fi

    "$REDIS_SERVER" --bind 127.0.0.1 --port "$port" --dir "$dir" \
        --daemonize yes --pidfile "$dir/redis.pid" \
        --logfile "$dir/redis.log" --save "" "${persist[@]}" \
    || { log "redis_start: redis-server failed; see $dir/redis.log"
         return 1; }

    if ! wait_until 30 "$REDIS_CLI" -h 127.0.0.1 -p "$port" ping; then
        log "redis_start: Redis on port $port does not answer PING;" \
            "the end of $dir/redis.log:"
        tail -n 20 "$dir/redis.log" >&2
        return 1
    fi
}


# redis_stop DIR: stop the redis-server whose pid file is in DIR, if it runs.
redis_stop() {
    local dir=$1 pid

    pid=$(cat "$dir/redis.pid" 2>/dev/null) || return 0

    if pid_is "$pid" redis-server; then
        kill -TERM "$pid"
        if ! wait_gone "$pid" 30; then
            log "redis_stop: redis-server $pid did not exit; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi

    rm -f "$dir/redis.pid"
}


# --------------------------------------------------------------------- nginx

# nginx_stop PIDFILE: stop an nginx master left running (by a run that was
# killed) and its workers.
nginx_stop() {
    local pid workers=()

    pid=$(cat "$1" 2>/dev/null) || return 0

    if pid_is "$pid" nginx; then
        mapfile -t workers < <(pgrep -P "$pid" || true)
        kill -TERM "$pid"
        if ! wait_gone "$pid" 10; then
            log "nginx_stop: nginx $pid did not exit; killing it"
            kill -KILL "$pid" "${workers[@]}" 2>/dev/null || true
        fi
    fi

    rm -f "$1"
}

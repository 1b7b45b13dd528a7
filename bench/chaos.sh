#!/bin/bash
# Faults under load (issue 14): faults injected into the running `make run`
# stack (nginx on 127.0.0.1:8080 with var/nginx/nginx.pid, PostgreSQL in
# var/pg on 55432, Redis in var/redis on 56379), and a matrix of them run
# under bench/chaos.js.
#
#   bench/chaos.sh [--log FILE] kill-worker    SIGKILL a random nginx worker
#   bench/chaos.sh [--log FILE] reload         HUP the master (nginx -s reload)
#   bench/chaos.sh [--log FILE] redis-restart  stop Redis, start it again
#   bench/chaos.sh [--log FILE] redis-down N   stop Redis, N s later start it
#   bench/chaos.sh [--log FILE] pg-restart     pg_ctl restart -m immediate
#   bench/chaos.sh [--log FILE] pg-down N      pg_ctl stop -m immediate, N s
#                                              later start it
#   bench/chaos.sh matrix [--only FAULT] [--rate R] [--users U]
#                         [--seconds S] [--drain S] [--keep DIR]
#
# Each fault appends "<epoch ms> start <name>" and "<epoch ms> end <name>"
# to the faults log (--log FILE, or $CHAT_LOG), the file bench/chaos.js
# reads with --faults-log; "end" comes when the fault is over (a new
# worker runs, the old ones exited, the service answers again).
#
# matrix runs, for each fault and each rate (500 and 2000 msgs/s, 400
# users, 40 s windows), chaos.js in the background, injects the fault(s)
# at set times of its sending window, and prints a markdown table line
# per run. FAULT: none, kill (3 worker kills), reload (2 reloads), redis
# (a restart, then down 10 s), pg (a restart, then down 10 s), slow (10
# devices stop reading for 20 s), mixed (all of them), storm (all 400
# devices dropped at once). --keep DIR keeps each run's JSON and log
# there. The whole matrix takes about 20 minutes on 2 cores.
#
#   bench/chaos.sh matrix
#   bench/chaos.sh matrix --only reload --rate 500
#
# A stack of its own instead of `make run`'s (same configuration, other
# ports, everything under DIR), for runs that must not disturb it or that
# may crash it: faults and the matrix then act on that stack, and the
# matrix starts its nginx again when workers crashed in a run.
#
#   bench/chaos.sh stack-start DIR      PostgreSQL, Redis, nginx under DIR
#   bench/chaos.sh --stack DIR matrix   (or CHAOS_STACK=DIR)
#   bench/chaos.sh stack-stop DIR       stops them (DIR stays: rm -rf it)
#
# Needs root (or the user that runs the stack) for the signals, pg_ctl
# and redis; node and the ws package (cd bench && npm install).

set -euo pipefail

# shellcheck source=../scripts/lib.sh source-path=SCRIPTDIR
. "$(cd "$(dirname "$0")/.." && pwd)/scripts/lib.sh"

top=$CHAT_TOP
LOG=${CHAT_LOG:-}
stack=${CHAOS_STACK:-}

# where the stack keeps what the faults act on
use_stack() {
    if [ -z "$stack" ]; then
        ngx_dir=$top/var/nginx
        pg_dir=$top/var/pg
        redis_dir=$top/var/redis
        conf=$top/conf/nginx.conf
        pg_port=55432
        redis_port=56379
        http_port=8080
    else
        [ -f "$stack/stack.env" ] || die "$stack/stack.env: no stack there (chaos.sh stack-start $stack)"
        # shellcheck disable=SC1091
        . "$stack/stack.env"
        ngx_dir=$stack/nginx
        pg_dir=$stack/pg
        redis_dir=$stack/redis
        conf=$ngx_dir/conf/nginx.conf
    fi
}

now_ms() {
    date +%s%3N
}

mark() {
    if [ -n "$LOG" ]; then
        echo "$(now_ms) $1 $2" >> "$LOG"
    fi
    log "$(date +%T.%3N) $1 $2"
}

master_pid() {
    local pid
    pid=$(cat "$ngx_dir/nginx.pid" 2>/dev/null) || die "no $ngx_dir/nginx.pid: is the stack running?"
    pid_is "$pid" nginx || die "nginx master $pid is not running"
    echo "$pid"
}

# the master's worker processes (not its cache manager, if any)
workers() {
    local m=$1 p
    for p in $(pgrep -P "$m" || true); do
        if grep -q 'worker process' "/proc/$p/cmdline" 2>/dev/null; then
            echo "$p"
        fi
    done
}

count_workers() {
    workers "$1" | wc -l
}

nworkers() {
    local n
    n=$(grep -Eo '^\s*worker_processes\s+[0-9]+' "$conf" | grep -Eo '[0-9]+$' || true)
    echo "${n:-2}"
}

# none of the pids runs any more
all_gone() {
    local p
    for p in "$@"; do
        alive "$p" && return 1
    done
    return 0
}

kill_worker() {
    local m victims victim want
    m=$(master_pid)
    want=$(nworkers)
    mapfile -t victims < <(workers "$m")
    [ "${#victims[@]}" -gt 0 ] || die "kill-worker: nginx $m has no workers"
    victim=${victims[RANDOM % ${#victims[@]}]}
    mark start kill-worker
    kill -KILL "$victim"
    log "  killed worker $victim"
    wait_until 10 eval "! alive $victim && [ \$(count_workers $m) -ge $want ]" \
        || log "kill-worker: the master did not start a new worker within 10 s"
    mark end kill-worker
}

reload() {
    local m old want
    m=$(master_pid)
    want=$(nworkers)
    mapfile -t old < <(workers "$m")
    mark start reload
    kill -HUP "$m"
    # new workers, and the old ones gone (they close their sockets first)
    wait_until 15 eval "all_gone ${old[*]} && [ \$(count_workers $m) -ge $want ]" \
        || log "reload: old workers still there 15 s after HUP"
    mark end reload
}

redis_restart() {
    mark start redis-restart
    redis_stop "$redis_dir"
    redis_start "$redis_dir" "$redis_port" run
    mark end redis-restart
}

redis_down() {
    local secs=$1
    mark start redis-down
    redis_stop "$redis_dir"
    sleep "$secs"
    redis_start "$redis_dir" "$redis_port" run
    mark end redis-down
}

pg_ready() {
    "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$pg_port"
}

pg_restart() {
    mark start pg-restart
    as_pg "$PG_BIN/pg_ctl" restart -D "$pg_dir" -l "$pg_dir/log" -m immediate \
        -w -t 60 -s
    wait_until 30 pg_ready || log "pg-restart: PostgreSQL not ready after 30 s"
    mark end pg-restart
}

pg_down() {
    local secs=$1
    mark start pg-down
    as_pg "$PG_BIN/pg_ctl" stop -D "$pg_dir" -m immediate -w -t 60 -s
    sleep "$secs"
    pg_start "$pg_dir" "$pg_port" run
    mark end pg-down
}

# whatever a fault left down (an interrupted run) is started again
restore() {
    if [ -f "$pg_dir/PG_VERSION" ] \
       && ! as_pg "$PG_BIN/pg_ctl" status -D "$pg_dir" >/dev/null 2>&1; then
        log "chaos.sh: starting PostgreSQL again"
        pg_start "$pg_dir" "$pg_port" run || true
    fi
    if ! "$REDIS_CLI" -h 127.0.0.1 -p "$redis_port" ping >/dev/null 2>&1; then
        log "chaos.sh: starting Redis again"
        redis_start "$redis_dir" "$redis_port" run || true
    fi
}


# ------------------------------------------------------------ a stack of its own

# conf/nginx.conf with this stack's ports and paths
stack_conf() {
    local dir=$1
    sed -e "s|^load_module build/|load_module $top/build/|" \
        -e "s|var/nginx/|$dir/nginx/|g" \
        -e "s|include      mime/|include      $top/conf/mime/|" \
        -e "s|port=55432|port=$pg_port|" \
        -e "s|127.0.0.1:56379|127.0.0.1:$redis_port|" \
        -e "s|listen 127.0.0.1:8080;|listen 127.0.0.1:$http_port;|" \
        -e "s|root  html;|root  $top/html;|" \
        -e "s|root        var;|root        $dir;|" \
        "$top/conf/nginx.conf"
}

nginx_up() {
    curl -s -o /dev/null "http://127.0.0.1:$http_port/"
}

stack_nginx_start() {
    "$NGINX_BIN" -p "$ngx_dir/" -c "$conf" \
        || die "nginx did not start; see $ngx_dir/logs/error.log"
    wait_until 10 nginx_up || die "nginx does not answer on port $http_port"
}

stack_start() {
    local dir=$1
    [ -n "$dir" ] || die "stack-start DIR"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    stack=$dir
    if [ ! -f "$dir/stack.env" ]; then
        pg_port=$(free_port)
        redis_port=$(free_port)
        http_port=$(free_port)
        printf 'pg_port=%s\nredis_port=%s\nhttp_port=%s\n' \
            "$pg_port" "$redis_port" "$http_port" > "$dir/stack.env"
    fi
    use_stack
    chmod 755 "$dir"
    mkdir -p "$ngx_dir/logs" "$ngx_dir/tmp" "$ngx_dir/conf" "$dir/blob"
    chmod 755 "$ngx_dir" "$ngx_dir/tmp"
    if [ "$(id -u)" = 0 ]; then
        chown nobody "$dir/blob"
    fi
    stack_conf "$dir" > "$conf"
    # what runs already is left alone (a second stack-start starts what
    # is missing, nginx with the modules built now)
    if ! as_pg "$PG_BIN/pg_ctl" status -D "$pg_dir" >/dev/null 2>&1; then
        pg_start "$pg_dir" "$pg_port" run
    fi
    pg_migrate "host=127.0.0.1 port=$pg_port dbname=chat user=chat"
    if ! "$REDIS_CLI" -h 127.0.0.1 -p "$redis_port" ping >/dev/null 2>&1; then
        redis_start "$redis_dir" "$redis_port" run
    fi
    if ! pid_is "$(cat "$ngx_dir/nginx.pid" 2>/dev/null)" nginx; then
        stack_nginx_start
    fi
    echo "stack in $dir: http://127.0.0.1:$http_port (PostgreSQL $pg_port, Redis $redis_port)"
}

stack_stop() {
    local dir=$1
    [ -n "$dir" ] || die "stack-stop DIR"
    stack=$(cd "$dir" && pwd)
    use_stack
    nginx_stop "$ngx_dir/nginx.pid"
    redis_stop "$redis_dir"
    pg_stop "$pg_dir"
}


# ------------------------------------------------------------------- matrix

# "<at seconds> <fault> [arg]" lines, and the client's own options, of a row
schedule() {
    case $1 in
    none)   ;;
    kill)   printf '%s\n' '8 kill-worker' '18 kill-worker' '28 kill-worker' ;;
    reload) printf '%s\n' '10 reload' '25 reload' ;;
    redis)  printf '%s\n' '8 redis-restart' '20 redis-down 10' ;;
    pg)     printf '%s\n' '8 pg-restart' '20 pg-down 10' ;;
    slow)   ;;
    mixed)  printf '%s\n' '5 kill-worker' '9 reload' '13 redis-restart' \
                          '17 pg-restart' '21 redis-down 5' '28 pg-down 5' ;;
    storm)  ;;
    *)      die "matrix: unknown fault $1 (none kill reload redis pg slow mixed storm)" ;;
    esac
}

client_opts() {
    case $1 in
    slow)   echo "--slow 0-9:20 --slow-at 10" ;;
    mixed)  echo "--slow 0-9:20 --slow-at 8" ;;
    storm)  echo "--storm $users --storm-at 15" ;;
    esac
}

fault_label() {
    case $1 in
    none)   echo 'none' ;;
    kill)   echo '3 worker kills' ;;
    reload) echo '2 reloads' ;;
    redis)  echo 'Redis restart + down 10 s' ;;
    pg)     echo 'PostgreSQL restart + down 10 s' ;;
    slow)   echo 'slow consumers (10 devices, 20 s)' ;;
    mixed)  echo 'all mixed' ;;
    storm)  echo "storm ($users devices at once)" ;;
    esac
}

# the table line of one run's JSON (stdin)
row() {
    # shellcheck disable=SC2016  # JavaScript, not shell
    FAULT="$1" RATE="$2" node -e '
        let s = "";
        process.stdin.on("data", (d) => s += d).on("end", () => {
            const f = process.env.FAULT, rate = process.env.RATE;
            let r;
            try { r = JSON.parse(s.trim().split("\n").pop()); } catch (e) {
                console.log(`| ${f} | ${rate} | no report | | | | | | | | |`);
                return;
            }
            const ms = (v) => v === undefined || v === null ? "-"
                : v >= 1000 ? `${(v / 1000).toFixed(1)} s` : `${Math.round(v)} ms`;
            const fw = r.fault_window;
            const p99 = fw ? ms(fw.delivered.p99) : `${ms(r.latency.delivered.p99)} (whole run)`;
            const notes = [];
            notes.push(`${r.committed}/${r.created} committed`);
            if (r.lost_after_resync !== undefined) notes.push(`${r.lost_after_resync} lost after a resync`);
            const errs = Object.entries(r.errors || {}).map(([k, v]) => `${k} ${v}`).join(", ");
            if (errs) notes.push(`errors: ${errs}`);
            if (r.storm) notes.push(`storm: all synced after ${ms(r.storm.synced_after_ms)}, `
                + `${r.storm.error_answers} error answers`);
            if (r.slow) notes.push(`slow: ${r.slow.cut_by_server} of their sockets closed meanwhile`);
            const contract = r.in_session_duplicates + r.own_echo + r.seq_conflicts;
            if (contract) notes.push(`contract: ${r.in_session_duplicates} repeats on a connection, `
                + `${r.own_echo} own echoes, ${r.seq_conflicts} seq conflicts`);
            if (r.timed_out) notes.push("TIMED OUT");
            console.log(`| ${f} | ${rate} | ${r.lost} | ${r.reordered} | ${r.double_stored} | `
                + `${r.phantom} | ${r.redeliveries} (${r.late_redeliveries || 0} late) | ${r.reconnects} | `
                + `${ms(r.longest_without_session_ms)} | ${p99} | ${notes.join("; ")} |`);
        });'
}

run_one() {
    local fault=$1 rate=$2 flog out err cpid t0 at what arg begin line status=0
    local elog emark crashes alerts

    elog=$ngx_dir/logs/error.log
    emark=$(stat -c %s "$elog" 2>/dev/null || echo 0)
    flog=$(mktemp "${TMPDIR:-/tmp}/chaos-faults.XXXXXX")
    out=$(mktemp "${TMPDIR:-/tmp}/chaos-out.XXXXXX")
    err=$(mktemp "${TMPDIR:-/tmp}/chaos-err.XXXXXX")
    # shellcheck disable=SC2046  # the client's options are split on purpose
    node "$top/bench/chaos.js" --json --base "http://127.0.0.1:$http_port" \
        --users "$users" --rate "$rate" \
        --seconds "$seconds" --drain "$drain" --faults-log "$flog" \
        $(client_opts "$fault") > "$out" 2> "$err" &
    cpid=$!

    # the client's sending window starts after its setup
    begin=
    for _ in $(seq 1 1200); do
        begin=$(grep -m1 ' begin sending' "$flog" 2>/dev/null | cut -d' ' -f1 || true)
        [ -n "$begin" ] && break
        alive "$cpid" || break
        sleep 0.1
    done
    if [ -z "$begin" ]; then
        log "matrix: $fault at $rate: the client did not start sending; its output:"
        cat "$err" >&2
        kill "$cpid" 2>/dev/null || true
        wait "$cpid" 2>/dev/null || true
        echo "| $(fault_label "$fault") | $rate | setup failed | | | | | | | | |"
        return 0
    fi

    LOG=$flog
    while read -r at what arg; do
        [ -n "$at" ] || continue
        t0=$(( begin + at * 1000 - $(now_ms) ))
        if [ "$t0" -gt 0 ]; then
            sleep "$(printf '%d.%03d' $((t0 / 1000)) $((t0 % 1000)))"
        fi
        case $what in
        kill-worker)   kill_worker ;;
        reload)        reload ;;
        redis-restart) redis_restart ;;
        redis-down)    redis_down "$arg" ;;
        pg-restart)    pg_restart ;;
        pg-down)       pg_down "$arg" ;;
        esac
    done < <(schedule "$fault")
    LOG=

    wait "$cpid" || status=$?
    # workers that crashed (not the ones this script killed), other alerts
    crashes=$(tail -c +"$((emark + 1))" "$elog" | grep 'exited on signal' | grep -vc 'signal 9$' || true)
    alerts=$(tail -c +"$((emark + 1))" "$elog" | grep -E '\[(alert|crit|emerg)\]' \
             | grep -vc 'exited on signal' || true)
    line=$(row "$(fault_label "$fault")" "$rate" < "$out")
    if [ "$crashes" -gt 0 ] || [ "$alerts" -gt 0 ]; then
        line="${line% |}; error log: $crashes worker crashes, $alerts other alert/crit lines |"
    fi
    echo "$line"
    if [ -n "$keep" ]; then
        cp "$out" "$keep/$fault-$rate.json"
        cp "$err" "$keep/$fault-$rate.stderr"
        cp "$flog" "$keep/$fault-$rate.faults"
    fi
    if [ "$status" -ne 0 ] && [ "$status" -ne 1 ]; then
        log "matrix: $fault at $rate: chaos.js exited $status; the end of its output:"
        tail -n 5 "$err" >&2
    fi
    rm -f "$flog" "$out" "$err"
    restore
    if [ "$crashes" -gt 0 ]; then
        log "matrix: $crashes nginx workers crashed during this run; the first lines:"
        tail -c +"$((emark + 1))" "$elog" | grep 'exited on signal' | grep -v 'signal 9$' \
            | head -n 3 >&2
        if [ -n "$stack" ]; then
            log "matrix: starting the stack's nginx again for the next run"
            nginx_stop "$ngx_dir/nginx.pid"
            stack_nginx_start
        else
            log "matrix: \`make run\`'s nginx may be unusable now: restart it, or use --stack"
            return 1
        fi
    fi
    # the stack whole again before the next run
    wait_until 30 eval "[ \$(count_workers \$(master_pid)) -ge $(nworkers) ]" || true
    wait_until 30 pg_ready || true
    sleep 2
}

matrix() {
    local only='' rates=(500 2000) f r
    users=400 seconds=40 drain=30 keep=
    while [ $# -gt 0 ]; do
        case $1 in
        --only)    only=$2; shift 2 ;;
        --rate)    rates=("$2"); shift 2 ;;
        --users)   users=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --drain)   drain=$2; shift 2 ;;
        --keep)    keep=$2; mkdir -p "$keep"; shift 2 ;;
        *)         die "matrix: unknown option $1" ;;
        esac
    done
    local faults=(none kill reload redis pg slow mixed storm)
    if [ -n "$only" ]; then
        schedule "$only" >/dev/null
        faults=("$only")
    fi
    master_pid >/dev/null
    trap 'restore' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    echo "| fault | rate | lost | reordered | double-stored | phantom | redeliveries | reconnects | longest without session | p99 in the fault window | notes |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|"
    for r in "${rates[@]}"; do
        for f in "${faults[@]}"; do
            run_one "$f" "$r" || return 1
        done
    done
}


# --------------------------------------------------------------------- main

while [ $# -gt 0 ]; do
    case $1 in
    --log)     LOG=$2; shift 2 ;;
    --log=*)   LOG=${1#--log=}; shift ;;
    --stack)   stack=$(cd "$2" && pwd); shift 2 ;;
    --stack=*) stack=$(cd "${1#--stack=}" && pwd); shift ;;
    *)         break ;;
    esac
done

case ${1:-} in
stack-start) stack_start "${2:-}"; exit ;;
stack-stop)  stack_stop "${2:-}"; exit ;;
esac

use_stack

[ $# -gt 0 ] || die "usage: chaos.sh [--log FILE] [--stack DIR] kill-worker | reload | redis-restart | redis-down N | pg-restart | pg-down N | matrix [--only FAULT] [--rate R]"

case $1 in
kill-worker)   kill_worker ;;
reload)        reload ;;
redis-restart) redis_restart ;;
redis-down)    [ $# -ge 2 ] || die "redis-down N"; redis_down "$2" ;;
pg-restart)    pg_restart ;;
pg-down)       [ $# -ge 2 ] || die "pg-down N"; pg_down "$2" ;;
matrix)        shift; matrix "$@" ;;
*)             die "unknown command $1" ;;
esac

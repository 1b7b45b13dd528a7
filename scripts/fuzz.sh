#!/bin/bash
# Coverage-guided fuzzing of every parser that reads a client's or a
# peer's bytes: libFuzzer targets (fuzz/fuzz_*.c) built with clang,
# AddressSanitizer and UndefinedBehaviorSanitizer over our real sources and
# nginx's own core files.  See docs/fuzzing.md.
#
#   scripts/fuzz.sh build           build every target into build/fuzz/
#   scripts/fuzz.sh run [T ...]     run each target FUZZ_SECONDS (default
#                                   60), print executions and crashes
#   scripts/fuzz.sh smoke           every target 10 s (.ci/run)
#   scripts/fuzz.sh repro [F ...]   replay the saved crashes (fuzz/crashes/)
#                                   and the regression inputs (fuzz/regress/)
#                                   or the files given, through their targets
#   scripts/fuzz.sh coverage        the edges of our files that the corpora
#                                   (seeds and what runs added) reach
#
# make fuzz, make fuzz-repro call the same.  FUZZ_JOBS (default 1) runs
# that many targets at once.  A crash is saved as
# fuzz/crashes/<target>/crash-<sha1> and fails the run.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

out=${FUZZ_BUILD:-build/fuzz}      # FUZZ_BUILD: another build, to compare
ngx=build/nginx
ngx_version=1.22.1
ngx_sha256=9ebb333a9e82b952acd3e2b4aeb1d4ff6406f72491bab6cd9fe69f0dea737f31
ngx_src=$out/nginx-$ngx_version

targets=(ws_frames ws_inflate ws_utf8 ws_handshake client_json api_request
         asset_url redis_events)

# our sources per target (the real files, not copies)
declare -A ours=(
    [ws_frames]="ngx_chat_module/ws/ngx_chat_ws_conn.c ngx_chat_module/ws/ngx_chat_ws.c ngx_chat_module/ws/ngx_chat_ws_deflate.c"
    [ws_inflate]="ngx_chat_module/ws/ngx_chat_ws_conn.c ngx_chat_module/ws/ngx_chat_ws.c ngx_chat_module/ws/ngx_chat_ws_deflate.c"
    [ws_utf8]="ngx_chat_module/ws/ngx_chat_ws.c"
    [ws_handshake]="ngx_chat_module/ws/ngx_chat_ws.c"
    [client_json]="@chat"
    [api_request]="@chat"
    [asset_url]="@chat ngx_asset_module/ngx_asset_sign.c ngx_asset_module/ngx_asset_sigv4.c ngx_asset_module/ngx_asset_blob.c"
    [redis_events]="@chat"
)

# a target's sources, a line each
sources() {
    local f
    for f in ${ours[$1]}; do
        if [ "$f" = "@chat" ]; then chat_sources | tr ' ' '\n'; else echo "$f"; fi
    done
}

# "@chat": the chat module's code but the PostgreSQL pool's and the Redis
# adapter's connections, which fuzz/ngx_fuzz_chat.c plays
chat_sources() {
    find ngx_chat_module common -name '*.c' \
        ! -name ngx_chat_pg.c ! -name ngx_chat_redis.c | sort
    echo fuzz/ngx_fuzz_chat.c fuzz/ngx_fuzz_http.c
}

libs="-lz -lcrypto -ljansson -lpq -lhiredis"

# nginx's core files the targets link (the upstream release of nginx-dev)
ngx_files="core/ngx_string.c core/ngx_palloc.c core/ngx_rbtree.c
           core/ngx_array.c core/ngx_list.c core/ngx_buf.c core/ngx_queue.c
           core/ngx_hash.c core/ngx_parse.c core/ngx_crc32.c
           os/unix/ngx_alloc.c http/ngx_http_parse.c"

cflags="-g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined
        -fno-sanitize-recover=undefined -fno-sanitize=function"

die() { echo "fuzz: $*" >&2; exit 1; }

# whether $1 is missing or older than one of the files after it
newer() {
    local target=$1 f
    shift
    [ -f "$target" ] || return 0
    for f in "$@"; do
        [ "$f" -nt "$target" ] && return 0
    done
    return 1
}

deps() {
    local need=() sudo
    command -v clang-14 >/dev/null || need+=(clang-14)
    [ -f /usr/lib/llvm-14/lib/clang/14.0.6/lib/linux/libclang_rt.fuzzer-x86_64.a ] \
        || need+=(libclang-rt-14-dev)
    command -v llvm-symbolizer >/dev/null \
        || [ -x /usr/lib/llvm-14/bin/llvm-symbolizer ] || need+=(llvm-14)
    if [ ${#need[@]} -gt 0 ]; then
        echo "fuzz: installing ${need[*]}"
        sudo=
        [ "$(id -u)" = 0 ] || sudo=sudo
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q \
            "${need[@]}" >/dev/null
    fi
    [ -f "$ngx/objs/ngx_auto_config.h" ] || make -s modules
}

# nginx's own sources for the core files, checked against the checksum of
# the release (Debian's orig tarball is the upstream one)
nginx_src() {
    local have tgz
    have=$(dpkg-query -W -f '${Version}' nginx-dev 2>/dev/null || true)
    case "$have" in
        "$ngx_version"-*) ;;
        *) die "nginx-dev $have: scripts/fuzz.sh knows the sources of $ngx_version only" ;;
    esac
    [ -f "$ngx_src/src/core/ngx_string.c" ] && return 0
    mkdir -p "$out"
    tgz="$out/nginx_$ngx_version.orig.tar.gz"
    if [ ! -f "$tgz" ]; then
        curl -fsS -o "$tgz.part" \
            "http://deb.debian.org/debian/pool/main/n/nginx/nginx_$ngx_version.orig.tar.gz" \
            || die "cannot download nginx $ngx_version's sources"
        mv "$tgz.part" "$tgz"
    fi
    echo "$ngx_sha256  $tgz" | sha256sum -c --quiet - \
        || { rm -f "$tgz"; die "nginx_$ngx_version.orig.tar.gz: wrong checksum"; }
    tar -C "$out" -xzf "$tgz" "nginx-$ngx_version/src"
}

incs() {
    local d
    for d in src/core src/event src/event/modules src/os/unix objs \
             src/http src/http/modules src/http/v2; do
        printf -- '-I %s ' "$ngx/$d"
    done
    for d in fuzz ngx_chat_module ngx_chat_module/ws ngx_chat_module/session \
             ngx_chat_module/transport ngx_chat_module/api common \
             ngx_asset_module /usr/include/postgresql; do
        printf -- '-I %s ' "$d"
    done
}

build() {
    local t f o objs inc srcs
    deps
    nginx_src
    inc=$(incs)
    mkdir -p "$out/obj"

    # nginx's core and the runtime, once for every target.  nginx passes
    # its null string (NULL, 0) to memcpy() where %V prints one: harmless,
    # and everywhere in nginx; UBSan's nonnull check stays on for ours.
    objs=()
    for f in $ngx_files; do
        o="$out/obj/ngx_$(basename "$f" .c).o"
        if [ ! -f "$o" ] || [ "$ngx_src/src/$f" -nt "$o" ]; then
            # shellcheck disable=SC2086
            clang-14 -c $cflags -fno-sanitize=nonnull-attribute -w $inc \
                -o "$o" "$ngx_src/src/$f"
        fi
        objs+=("$o")
    done
    if newer "$out/obj/runtime.o" fuzz/ngx_fuzz_runtime.c fuzz/ngx_fuzz.h; then
        # shellcheck disable=SC2086
        clang-14 -c $cflags -Wall -Werror $inc -o "$out/obj/runtime.o" \
            fuzz/ngx_fuzz_runtime.c
    fi
    objs+=("$out/obj/runtime.o")

    # our sources, once each, instrumented for coverage; a header that
    # changed rebuilds them all
    if [ ! -f "$out/obj/headers.stamp" ] \
       || [ -n "$(find ngx_chat_module common ngx_asset_module fuzz \
                       -name '*.h' -newer "$out/obj/headers.stamp" | head -1)" ]
    then
        touch "$out/obj/headers.stamp"
    fi
    for f in $(for t in "${targets[@]}"; do sources "$t"; done | sort -u); do
        o="$out/obj/$(echo "${f%.c}" | tr / _).o"
        if newer "$o" "$f" "$out/obj/headers.stamp"; then
            # shellcheck disable=SC2086
            clang-14 -c $cflags -fsanitize=fuzzer-no-link -Wall \
                -Wno-unused-parameter -Wno-missing-field-initializers \
                -Werror $inc -o "$o" "$f"
        fi
    done

    for t in "${targets[@]}"; do
        [ -f "fuzz/fuzz_$t.c" ] || continue
        srcs=$(sources "$t")
        tobjs=()
        for f in $srcs; do
            tobjs+=("$out/obj/$(echo "${f%.c}" | tr / _).o")
        done
        newer "$out/fuzz_$t" "fuzz/fuzz_$t.c" fuzz/*.h "${tobjs[@]}" \
            "${objs[@]}" || continue
        # shellcheck disable=SC2086
        clang-14 $cflags -fsanitize=fuzzer -Wall -Wno-unused-parameter \
            -Wno-missing-field-initializers -Werror $inc \
            -o "$out/fuzz_$t" "fuzz/fuzz_$t.c" "${tobjs[@]}" "${objs[@]}" \
            $libs
    done
}


built_targets() {
    local t
    for t in "${targets[@]}"; do
        [ -x "$out/fuzz_$t" ] && echo "$t"
    done
}

# one target for $1 seconds: "target execs crashes"
run_one() {
    local t=$1 secs=$2 corpus dict seeds log execs crashes rc
    corpus="$out/corpus/$t"
    mkdir -p "$corpus" "fuzz/crashes/$t"
    dict=()
    [ -f "fuzz/$t.dict" ] && dict=(-dict="fuzz/$t.dict")
    seeds=()
    [ -d "fuzz/corpus/$t" ] && seeds=("fuzz/corpus/$t")
    log="$out/$t.log"
    rc=0
    ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        "$out/fuzz_$t" -max_total_time="$secs" -print_final_stats=1 \
            -rss_limit_mb=2048 -timeout=10 -max_len=65536 \
            -artifact_prefix="fuzz/crashes/$t/" "${dict[@]}" \
            "$corpus" "${seeds[@]}" > "$log" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    crashes=$(find "fuzz/crashes/$t" -type f | wc -l)
    if [ "$rc" -ne 0 ]; then
        crashes=$((crashes > 0 ? crashes : 1))
        grep -m1 -A12 'ERROR: \|runtime error\|deadly signal\|Timeout' "$log" >&2 \
            || tail -20 "$log" >&2
    fi
    printf '%-14s %12s execs %4s crashes\n' "$t" "${execs:-0}" "$crashes"
    [ "$rc" -eq 0 ] && [ "$crashes" -eq 0 ]
}

run() {
    local secs=${FUZZ_SECONDS:-60} jobs=${FUZZ_JOBS:-1} t status=0 list
    build
    if [ $# -gt 0 ]; then list=("$@"); else mapfile -t list < <(built_targets); fi
    echo "fuzz: ${#list[@]} targets, ${secs} s each, $jobs at a time"
    if [ "$jobs" -le 1 ]; then
        for t in "${list[@]}"; do run_one "$t" "$secs" || status=1; done
    else
        export -f run_one
        export out
        printf '%s\n' "${list[@]}" \
            | xargs -P "$jobs" -I{} bash -c "run_one {} $secs" || status=1
    fi
    total=0
    for t in "${list[@]}"; do
        n=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/$t.log" | tail -1)
        total=$((total + ${n:-0}))
    done
    echo "fuzz: $total executions in all"
    return $status
}

repro() {
    local f t status=0 files=("$@")
    build
    if [ ${#files[@]} -eq 0 ]; then
        mapfile -t files < <(find fuzz/crashes fuzz/regress -type f \
                                  ! -name '.*' 2>/dev/null | sort)
    fi
    [ ${#files[@]} -gt 0 ] || { echo "fuzz: nothing to replay"; return 0; }
    for f in "${files[@]}"; do
        t=$(basename "$(dirname "$f")")
        [ -x "$out/fuzz_$t" ] || die "$f: no target $t"
        if ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
            "$out/fuzz_$t" "$f" > "$out/repro.log" 2>&1; then
            echo "ok      $f"
        else
            echo "CRASH   $f"
            grep -m1 -A12 'ERROR: \|runtime error\|deadly signal' "$out/repro.log" >&2 || true
            status=1
        fi
    done
    return $status
}

coverage() {
    local t
    build
    for t in $(built_targets); do
        mkdir -p "$out/corpus/$t"
        "$out/fuzz_$t" -runs=0 -print_coverage=1 "$out/corpus/$t" \
            fuzz/corpus/"$t" 2>&1 | grep '_FUNC: ' || true
    done | python3 fuzz/coverage.py
}

case "${1:-run}" in
    build) build ;;
    run) shift || true; run "$@" ;;
    smoke) FUZZ_SECONDS=10 run ;;
    repro) shift; repro "$@" ;;
    coverage) coverage ;;
    *) die "usage: scripts/fuzz.sh build|run [target ...]|smoke|repro [file ...]|coverage" ;;
esac

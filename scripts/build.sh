#!/bin/bash
# Build ngx_chat_module.so and ngx_asset_module.so against Debian's nginx
# sources (package nginx-dev) into build/modules/.
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
src=/usr/share/nginx/src
build="$top/build"
ngx="$build/nginx"

if [ ! -f "$src/conf_flags" ]; then
    echo "build: $src/conf_flags not found: install nginx-dev" >&2
    exit 1
fi

# Debian's own compiler flags keep the modules binary-compatible with
# /usr/sbin/nginx; ours make every warning in our sources an error.
cc_opt="-g -O2 -fstack-protector-strong -Wformat -Werror=format-security"
cc_opt="$cc_opt -fPIC -D_FORTIFY_SOURCE=2"
cc_opt="$cc_opt -Wall -Wextra -Wno-unused-parameter"
cc_opt="$cc_opt -Wno-missing-field-initializers -Werror"
ld_opt="-Wl,-z,relro -Wl,-z,now -fPIC"

stamp="$build/configure.stamp"
want="$(cat "$top/config" "$src/conf_flags"; echo "$cc_opt $ld_opt")"

if [ ! -f "$ngx/objs/Makefile" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]
then
    rm -rf "$ngx"
    mkdir -p "$build"
    cp -a "$src" "$ngx"
    (
        cd "$ngx"
        . ./conf_flags
        ./configure "${NGX_CONF_FLAGS[@]}" \
            --with-cc-opt="$cc_opt" --with-ld-opt="$ld_opt" \
            --add-dynamic-module="$top" > "$build/configure.log" 2>&1 \
        || { tail -n 30 "$build/configure.log" >&2; exit 1; }
    )
    printf '%s' "$want" > "$stamp"
fi

make -s -C "$ngx" -f objs/Makefile modules
mkdir -p "$build/modules"

# A new file renamed into place: nginx processes running the old module
# keep their mapping (copying over it in place crashes them).
for m in ngx_chat_module ngx_asset_module; do
    cp "$ngx/objs/$m.so" "$build/modules/.$m.so.new"
    mv -f "$build/modules/.$m.so.new" "$build/modules/$m.so"
done

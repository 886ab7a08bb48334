#!/usr/bin/env bash
# Builds build/ngx_http_cfcost_module.so binary-compatible with Debian's
# nginx: configure nginx-dev's source with Debian's own flags plus this
# module, then compile just the modules.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
src=/usr/share/nginx/src
work=$root/build/nginx
stamp=$work/.configured

if [ ! -f "$src/conf_flags" ]; then
    echo "cfcost: $src/conf_flags not found: apt-get install nginx-dev" >&2
    exit 1
fi

if [ ! -f "$stamp" ] || [ "$root/config" -nt "$stamp" ]; then
    rm -rf "$work"
    mkdir -p "$work"
    cp -r "$src/." "$work/"
    # shellcheck disable=SC1091
    . "$work/conf_flags"
    (cd "$work" && ./configure "${NGX_CONF_FLAGS[@]}" \
        --with-cc-opt="-g -O2 -fPIC -Wall -Werror" \
        --with-ld-opt="-Wl,-z,relro -Wl,-z,now -fPIC" \
        --add-dynamic-module="$root" > "$work/configure.log" 2>&1) || {
        tail -30 "$work/configure.log" >&2
        exit 1
    }
    touch "$stamp"
fi

make -s -C "$work" -f objs/Makefile modules
# a new inode: nginx processes that loaded the old file keep theirs intact
cp "$work/objs/ngx_http_cfcost_module.so" "$root/build/.module.so.tmp"
mv -f "$root/build/.module.so.tmp" "$root/build/ngx_http_cfcost_module.so"

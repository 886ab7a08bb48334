#!/usr/bin/env bash
# Builds build/ngx_http_cfcost_module.so binary-compatible with Debian's
# nginx: configure nginx-dev's source with Debian's own flags plus this
# module, then compile just the modules.
#
#   scripts/build-module.sh [--out DIR] [--cc-opt OPTS] [--ld-opt OPTS]
#
# --out DIR puts the configured source (DIR/nginx) and the module
# (DIR/ngx_http_cfcost_module.so) there instead of build/ (a relative DIR is
# taken from the project root); --cc-opt and --ld-opt are appended to the
# compiler and linker options.  `make test-sanitize` builds build/asan with
# -fsanitize=address,undefined this way.  A change of options reconfigures.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out=build
extra_cc=
extra_ld=
while [ $# -gt 0 ]; do
    case $1 in
        --out)    out=$2; shift 2 ;;
        --cc-opt) extra_cc=$2; shift 2 ;;
        --ld-opt) extra_ld=$2; shift 2 ;;
        *) echo "usage: $0 [--out DIR] [--cc-opt OPTS] [--ld-opt OPTS]" >&2
           exit 2 ;;
    esac
done
case $out in /*) ;; *) out=$root/$out ;; esac

# The module gets Debian's flags and --cc-opt only, not those of a calling
# make: nginx's configure starts from $CFLAGS, and a make's command-line
# variables (make test-sanitize runs make CFLAGS=...) reach the environment
# and, through MAKEFLAGS, nginx's own Makefile.
unset CFLAGS MAKEFLAGS MFLAGS MAKEOVERRIDES MAKELEVEL

src=/usr/share/nginx/src
work=$out/nginx
stamp=$work/.configured
cc_opt="-g -O2 -fPIC -Wall -Werror${extra_cc:+ $extra_cc}"
ld_opt="-Wl,-z,relro -Wl,-z,now -fPIC${extra_ld:+ $extra_ld}"
opts="cc-opt: $cc_opt; ld-opt: $ld_opt"

if [ ! -f "$src/conf_flags" ]; then
    echo "cfcost: $src/conf_flags not found: apt-get install nginx-dev" >&2
    exit 1
fi

if [ ! -f "$stamp" ] || [ "$root/config" -nt "$stamp" ] \
   || [ "$(cat "$stamp")" != "$opts" ]; then
    rm -rf "$work"
    mkdir -p "$work"
    cp -r "$src/." "$work/"
    # shellcheck disable=SC1091
    . "$work/conf_flags"
    # configure's probes run what they compile: a sanitized probe that leaks
    # must not count as a missing feature
    (cd "$work" && ASAN_OPTIONS=detect_leaks=0 ./configure \
        "${NGX_CONF_FLAGS[@]}" \
        --with-cc-opt="$cc_opt" \
        --with-ld-opt="$ld_opt" \
        --add-dynamic-module="$root" > "$work/configure.log" 2>&1) || {
        tail -30 "$work/configure.log" >&2
        exit 1
    }
    printf '%s\n' "$opts" > "$stamp"
fi

make -s -C "$work" -f objs/Makefile modules
# a new inode: nginx processes that loaded the old file keep theirs intact
cp "$work/objs/ngx_http_cfcost_module.so" "$out/.module.so.tmp"
mv -f "$out/.module.so.tmp" "$out/ngx_http_cfcost_module.so"

#!/usr/bin/env bash
# make run: the whole gateway in the foreground -- its own redis-server, the
# Workers AI emulator when no Cloudflare token is set, and nginx with the
# cfcost module.  Ctrl-C (or SIGTERM) stops every child.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
var=${CFCOST_VAR:-$root/var}
mkdir -p "$var/tmp"
var=$(cd "$var" && pwd)
port=${CFCOST_PORT:-8080}
upstream=${CFCOST_UPSTREAM:-https://api.cloudflare.com}
account=${CF_ACCOUNT_ID:-}
token=${CF_API_TOKEN:-}
pids=()

say() { printf 'cfcost: %s\n' "$*" >&2; }

stopping=
stop() {
    trap - INT TERM EXIT
    stopping=1
    say "stopping"
    if [ -f "$var/nginx.pid" ]; then
        kill -QUIT "$(cat "$var/nginx.pid")" 2>/dev/null || true
    fi
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap stop INT TERM EXIT

nginx_up() {     # our nginx (not whatever else holds the port) answers
    kill -0 "$1" 2>/dev/null &&
        curl -sf "http://127.0.0.1:$port/api/ai/models" | grep -q '"models"'
}

free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_for() {     # wait_for WHAT COMMAND...: up to 10 s
    local what=$1; shift
    for _ in $(seq 100); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    say "$what did not start; see $var"
    exit 1
}

# Redis: data under $var, reachable only through a unix socket (world-
# writable so that nginx workers, which run as nobody when started as root,
# can connect; a production Redis would also set a password or ACL)
redis-server --port 0 --unixsocket "$var/redis.sock" --unixsocketperm 777 \
    --dir "$var" --appendonly yes --save "" --daemonize no \
    --logfile "$var/redis.log" &
pids+=($!)
wait_for "redis-server" redis-cli -s "$var/redis.sock" ping
export CFCOST_REDIS="unix:$var/redis.sock"

if [ -z "$token" ]; then
    emu_port=$(free_port)
    account=emulator-account
    token=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
    /usr/bin/python3 "$root/emulator/cf_emulator.py" \
        --listen "127.0.0.1:$emu_port" --token "$token" \
        --account "$account" > "$var/emulator.log" 2>&1 &
    pids+=($!)
    wait_for "the emulator" grep -q listening "$var/emulator.log"
    upstream="http://127.0.0.1:$emu_port"
    say "CF_API_TOKEN is not set: using the local Workers AI emulator at $upstream"
elif [ -z "$account" ]; then
    say "CF_API_TOKEN is set but CF_ACCOUNT_ID is not"; exit 2
fi

if ! [[ $token =~ ^[A-Za-z0-9._~+/=-]+$ && $account =~ ^[A-Za-z0-9_-]+$ ]]; then
    say "CF_API_TOKEN or CF_ACCOUNT_ID has unexpected characters"; exit 2
fi

scheme=${upstream%%://*}
hostport=${upstream#*://}
hostport=${hostport%%/*}
host=${hostport%:*}
if [ "$host" = "$hostport" ]; then
    hostport="$host:$([ "$scheme" = https ] && echo 443 || echo 80)"
fi

if [ ! -s "$var/admin-token" ]; then
    (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$var/admin-token")
fi

# a demo key, kept across runs while Redis still knows it
key=$(cat "$var/demo-key" 2>/dev/null || true)
if [ -z "$key" ] || [ "$(redis-cli -s "$var/redis.sock" exists \
        "cfcost:key:$(printf %s "$key" | sha256sum | cut -d' ' -f1)")" != 1 ]; then
    key=$("$root/build/cfcost" keys create --user demo --name "make run demo" | tail -n 1)
    (umask 077; printf '%s\n' "$key" > "$var/demo-key")
fi

# the usage API daemon
rm -f "$var/agg.sock"
"$root/build/cfcost-aggregator" --listen "unix:$var/agg.sock" \
    --redis "unix:$var/redis.sock" > "$var/aggregator.log" 2>&1 &
pids+=($!)
wait_for "cfcost-aggregator" test -S "$var/agg.sock"

"$root/scripts/render-conf" "$root/conf/nginx.conf.in" "$var/nginx.conf" \
    MODULE="$root/build/ngx_http_cfcost_module.so" WORKERS=auto VAR="$var" \
    LOG_LEVEL=notice PRICING="$root/conf/pricing.json" \
    REDIS="unix:$var/redis.sock" CF_ACCOUNT_ID="$account" CF_API_TOKEN="$token" \
    UPSTREAM_HOSTPORT="$hostport" UPSTREAM_HOST="$host" \
    UPSTREAM_SCHEME="$scheme" PORT="$port" ROOT="$root/dashboard"

nginx -t -q -p "$var/" -c "$var/nginx.conf" -e "$var/error.log"
nginx -p "$var/" -c "$var/nginx.conf" -e "$var/error.log" &
pids+=($!)
wait_for "nginx" nginx_up $!

cat <<MSG

  cfcost is running on http://127.0.0.1:$port/   (dashboard)
  upstream:     $upstream
  demo API key: $key
  admin token:  $var/admin-token
  usage:        curl -s http://127.0.0.1:$port/api/usage -H 'X-API-Key: $key'
  logs:         $var/error.log

  Try it:
    curl -s http://127.0.0.1:$port/api/ai/chat -H 'X-API-Key: $key' \\
      -d '{"model":"@cf/meta/llama-3.1-8b-instruct","messages":[{"role":"user","content":"Hello"}]}'

  More keys:    CFCOST_VAR=$var build/cfcost keys create --user NAME
  Ctrl-C stops everything.

MSG

# run until a child dies or we are told to stop
wait -n "${pids[@]}" || true
[ -n "$stopping" ] || say "a child process exited; shutting down"

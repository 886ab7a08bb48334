#!/usr/bin/env bash
# make run: the whole gateway in the foreground -- its own redis-server, the
# Workers AI emulator when no Cloudflare token is set, the aggregator, and
# nginx with the cfcost module.
#
# This script is their supervisor.  Redis, the emulator and the aggregator
# each run under a small loop that restarts them when they exit (capped
# exponential backoff, a line on stderr); nginx keeps serving meanwhile (its
# workers queue records while Redis is away).  nginx is the process that
# stays: if it exits, everything stops.  Ctrl-C or SIGTERM stops nginx first
# (QUIT: graceful, workers flush their record queues), then the emulator and
# the aggregator, then Redis.
#
# Every child runs in its own session, so a Ctrl-C on the terminal reaches
# only this script, which then stops the children in that order.  Their pids
# are in $CFCOST_VAR/NAME.pid (redis-server, emulator, aggregator; nginx
# writes nginx.pid itself).
#
# For the tests: CFCOST_BUILD takes the binaries from another directory than
# build/ (relative to the project root unless absolute), CFCOST_NGINX is the
# nginx command (default: nginx); `make test-sanitize` sets build/asan and
# scripts/sanitized-nginx.
set -euo pipefail

# the gateway's state is its own: no other local user reads the store,
# the sockets or the tokens (README, "Who can do what")
umask 077

root=$(cd "$(dirname "$0")/.." && pwd)
build=${CFCOST_BUILD:-build}
case $build in /*) ;; *) build=$root/$build ;; esac
nginx=${CFCOST_NGINX:-nginx}
var=${CFCOST_VAR:-$root/var}
mkdir -p "$var/tmp"
var=$(cd "$var" && pwd)
chmod 700 "$var"

# nginx's workers run as the invoking user, so they reach $var (0700);
# started by root, nginx would otherwise drop them to its default user
nginx_user=()
if [ "$(id -u)" = 0 ]; then
    nginx_user=(-g "user $(id -un) $(id -gn);")
fi
port=${CFCOST_PORT:-8080}
upstream=${CFCOST_UPSTREAM:-https://api.cloudflare.com}
account=${CF_ACCOUNT_ID:-}
token=${CF_API_TOKEN:-}
main_pid=$$

say() { printf 'cfcost: %s\n' "$*" >&2; }

# alive PID: the process exists and is not a zombie (a child of ours that
# exited stays a zombie until waited for, and kill -0 still succeeds on it)
alive() {
    local s
    s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    s=${s##*) }
    [ "${s%% *}" != Z ]
}

# reap PID SECONDS: waits up to SECONDS for our child PID to exit, then
# collects its status (TERM, then KILL, if it is still there)
reap() {
    local pid=$1 n=$(($2 * 10)) sig
    for sig in TERM KILL; do
        while [ "$n" -gt 0 ] && alive "$pid"; do sleep 0.1; n=$((n - 1)); done
        alive "$pid" || break
        kill -"$sig" "$pid" 2>/dev/null || true
        n=30
    done
    wait "$pid" 2>/dev/null || true
}

# group_alive PGID: a live process is left in that process group (each child
# leads its own: setsid)
group_alive() {
    local f s state ppid pgrp
    for f in /proc/[0-9]*/stat; do
        read -r s 2>/dev/null < "$f" || continue
        read -r state ppid pgrp _ <<< "${s##*) }"
        [ "$pgrp" = "$1" ] && [ "$state" != Z ] && return 0
    done
    return 1
}

# rcli ARGS...: redis-cli as the admin (Redis's default user) (the password in the environment,
# which only this user can read, not on the command line), for 5 s at most
rcli() {
    REDISCLI_AUTH=$(cut -d' ' -f2 "$var/redis-admin.auth") timeout 5 \
        redis-cli --no-auth-warning -s "$var/redis.sock" "$@"
}

# redis_ready [PID]: waits until Redis answers PING with exactly PONG (an
# error such as LOADING does not count): up to 10 s, or 120 s once it says
# it is loading its data.  With PID, gives up as soon as that process is gone.
redis_ready() {
    local watch=${1:-} start=$SECONDS limit=10 out
    while :; do
        out=$(rcli ping 2>&1) || true
        [ "$out" = PONG ] && return 0
        if [[ $out == *LOADING* ]] && [ "$limit" -lt 120 ]; then
            say "Redis is loading its data..."
            limit=120
        fi
        [ $((SECONDS - start)) -lt "$limit" ] || return 1
        [ -z "$watch" ] || alive "$watch" || return 1
        sleep 0.1
    done
}

# supervise NAME LOG CMD...: runs CMD (output appended to LOG) and restarts
# it whenever it exits, after 0.2 s, doubling up to 5 s; the delay goes back
# to 0.2 s once a run has lasted 30 s.  SIGTERM stops CMD (TERM, KILL after
# 10 s) and the loop.  Runs in the background (a subshell).
supervise() {
    local name=$1 log=$2
    shift 2
    set +e
    sv_stop= sv_child= sv_sleep= sv_termed=
    trap '' HUP INT      # the terminal's signals are for the main script
    trap 'sv_stop=1
          if [ -n "$sv_child" ] && [ -z "$sv_termed" ]; then
              kill -TERM "$sv_child" 2>/dev/null; sv_termed=1
          fi
          [ -z "$sv_sleep" ] || kill -TERM "$sv_sleep" 2>/dev/null' TERM
    local delay=200 started rc runs=0
    while [ -z "$sv_stop" ]; do
        started=$SECONDS
        setsid "$@" >>"$log" 2>&1 </dev/null &
        sv_child=$!
        printf '%s\n' "$sv_child" > "$var/$name.pid"
        [ -z "$sv_stop" ] || break
        runs=$((runs + 1))
        if [ "$name" = redis-server ] && [ "$runs" -gt 1 ]; then
            if redis_ready "$sv_child"; then
                say "redis-server is back"
            elif alive "$sv_child"; then
                say "redis-server does not answer PING; see $var/redis.log"
            fi
        fi
        wait "$sv_child" 2>/dev/null; rc=$?    # (no "Killed" line)
        [ -z "$sv_stop" ] || break
        kill -KILL -- "-$sv_child" 2>/dev/null  # what it left behind, if any
        sv_child=
        kill -0 "$main_pid" 2>/dev/null || exit 0      # orphaned: stop
        [ $((SECONDS - started)) -lt 30 ] || delay=200
        say "$name exited (status $rc); restarting in $((delay / 1000)).$((delay % 1000 / 100)) s"
        sleep "$((delay / 1000)).$(printf %03d $((delay % 1000)))" &
        sv_sleep=$!
        wait "$sv_sleep"
        sv_sleep=
        delay=$((delay * 2 > 5000 ? 5000 : delay * 2))
    done
    if [ -n "$sv_child" ]; then
        # (TERM may have come before $sv_child was set)
        [ -n "$sv_termed" ] || kill -TERM "$sv_child" 2>/dev/null
        reap "$sv_child" 10
        kill -KILL -- "-$sv_child" 2>/dev/null
    fi
    rm -f "$var/$name.pid"
    exit 0
}

declare -A sv=()         # name -> supervisor pid
nginx_pid=
stopping=

stop_sv() {              # stop_sv NAME...: the supervisors, in parallel
    local n
    for n in "$@"; do
        [ -n "${sv[$n]:-}" ] && kill -TERM "${sv[$n]}" 2>/dev/null || true
    done
    for n in "$@"; do
        [ -n "${sv[$n]:-}" ] || continue
        reap "${sv[$n]}" 15
        # a supervisor killed before it could stop its child: do it here
        local pid
        pid=$(cat "$var/$n.pid" 2>/dev/null) || pid=
        if [ -n "$pid" ] && alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
        rm -f "$var/$n.pid"
        unset "sv[$n]"
    done
}

stop() {
    local rc=${1:-0}
    trap '' INT TERM HUP
    trap - EXIT
    stopping=1
    [ -z "$nginx_pid" ] && [ "${#sv[@]}" -eq 0 ] || say "stopping"
    if [ -n "$nginx_pid" ]; then
        # QUIT: a graceful stop, the workers flush their record queues.  To
        # the master; or, if it died, to the workers it left behind.
        if alive "$nginx_pid"; then
            kill -QUIT "$nginx_pid" 2>/dev/null || true
        else
            kill -QUIT -- "-$nginx_pid" 2>/dev/null || true
        fi
        reap "$nginx_pid" 10
        local n=50
        while [ "$n" -gt 0 ] && group_alive "$nginx_pid"; do
            sleep 0.1; n=$((n - 1))
        done
        kill -KILL -- "-$nginx_pid" 2>/dev/null || true
    fi
    stop_sv emulator aggregator
    stop_sv redis-server
    exit "$rc"
}
trap 'stop 0' INT TERM HUP
trap 'stop $?' EXIT

nginx_up() {     # our nginx (not whatever else holds the port) answers
    alive "$1" &&
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

# Redis: data under $var, reachable only through a unix socket of this
# user's (0700, in a 0700 directory; the workers run as this user too),
# with a memory ceiling that never evicts a record: when it is reached,
# Redis refuses writes with OOM and the gateway holds its records until
# there is room (README, "Sizing Redis")
# Redis users per role, passwords generated once (scripts/redis-acl; README,
# "Security model"): the module, the aggregator and the CLI each read their
# own $var/redis-ROLE.auth, and a client without one can do nothing
export CFCOST_VAR=$var
"$root/scripts/redis-acl" "$var"
if [ -S "$var/redis.sock" ] && rcli ping >/dev/null 2>&1; then
    say "$var/redis.sock answers: another gateway runs on $var; stop it first"
    exit 1
fi
supervise redis-server /dev/null \
    redis-server --port 0 --unixsocket "$var/redis.sock" --unixsocketperm 700 \
    --dir "$var" --appendonly yes --save "" --daemonize no \
    --maxmemory "${CFCOST_REDIS_MAXMEMORY:-512mb}" --maxmemory-policy noeviction \
    --aclfile "$var/redis-users.acl" \
    --logfile "$var/redis.log" &
sv[redis-server]=$!
if ! redis_ready; then
    say "redis-server did not start; see $var/redis.log"
    exit 1
fi
export CFCOST_REDIS="unix:$var/redis.sock"

if [ -z "$token" ]; then
    emu_port=$(free_port)
    account=emulator-account
    token=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
    : > "$var/emulator.log"
    supervise emulator "$var/emulator.log" \
        /usr/bin/python3 "$root/emulator/cf_emulator.py" \
        --listen "127.0.0.1:$emu_port" --token "$token" \
        --account "$account" &
    sv[emulator]=$!
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
if [ ! -s "$var/metrics-token" ]; then
    (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$var/metrics-token")
fi

# a demo key, kept across runs while Redis still knows it
key=$(cat "$var/demo-key" 2>/dev/null || true)
if [ -z "$key" ] || [ "$(rcli exists \
        "cfcost:key:$(printf %s "$key" | sha256sum | cut -d' ' -f1)")" != 1 ]; then
    key=$("$build/cfcost" keys create --user demo --name "make run demo" | tail -n 1)
    (umask 077; printf '%s\n' "$key" > "$var/demo-key")
fi

# the usage API daemon (it replaces a dead predecessor's socket itself);
# one consumer name across restarts, so that a restarted aggregator takes
# up at once what the killed one had read, instead of after --claim-idle
rm -f "$var/agg.sock"
: > "$var/aggregator.log"
supervise aggregator "$var/aggregator.log" \
    "$build/cfcost-aggregator" --listen "unix:$var/agg.sock" \
    --socket-mode 0600 --redis "unix:$var/redis.sock" \
    --redis-auth "$var/redis-aggregator.auth" --consumer "make-run-$(hostname)" &
sv[aggregator]=$!
wait_for "cfcost-aggregator" test -S "$var/agg.sock"

# nginx's workers (this user) open these after start-up, when a refusal
# would only be an error-log line and a 503: check now, and say exactly
# which directory stops them and what to change
unreachable=0
"$root/scripts/reach" "records and key lookups" "$var/redis.sock" write ||
    unreachable=1
"$root/scripts/reach" "the usage API" "$var/agg.sock" write || unreachable=1
"$root/scripts/reach" "the dashboard" "$root/dashboard/index.html" read ||
    unreachable=1
[ "$unreachable" = 0 ] || exit 1

"$root/scripts/render-conf" "$root/conf/nginx.conf.in" "$var/nginx.conf" \
    MODULE="$build/ngx_http_cfcost_module.so" WORKERS=auto VAR="$var" \
    LOG_LEVEL=notice PRICING="$root/conf/pricing.json" \
    REDIS="unix:$var/redis.sock" CF_ACCOUNT_ID="$account" CF_API_TOKEN="$token" \
    UPSTREAM_HOSTPORT="$hostport" UPSTREAM_HOST="$host" \
    UPSTREAM_SCHEME="$scheme" PORT="$port" ROOT="$root/dashboard"

"$nginx" -t -q -p "$var/" -c "$var/nginx.conf" -e "$var/error.log" "${nginx_user[@]}"
setsid "$nginx" -p "$var/" -c "$var/nginx.conf" -e "$var/error.log" \
    "${nginx_user[@]}" </dev/null &
nginx_pid=$!
wait_for "nginx" nginx_up "$nginx_pid"

cat <<MSG

  cfcost is running on http://127.0.0.1:$port/   (dashboard)
  upstream:     $upstream
  demo API key: $key
  admin token:  $var/admin-token
  metrics token: $var/metrics-token (Prometheus: Authorization: Bearer)
  usage:        curl -s http://127.0.0.1:$port/api/usage -H 'X-API-Key: $key'
  logs:         $var/error.log

  Try it:
    curl -s http://127.0.0.1:$port/api/ai/chat -H 'X-API-Key: $key' \\
      -d '{"model":"@cf/meta/llama-3.1-8b-instruct","messages":[{"role":"user","content":"Hello"}]}'

  More keys:    CFCOST_VAR=$var build/cfcost keys create --user NAME
  Ctrl-C stops everything.

MSG

# Run until nginx exits or we are told to stop (the trap calls stop, which
# exits).  The other children are restarted by their supervisors.
rc=0
wait "$nginx_pid" || rc=$?
say "nginx exited (status $rc); stopping everything"
stop 1

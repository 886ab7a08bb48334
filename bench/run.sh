#!/usr/bin/env bash
# bench/run.sh: the cfcost benchmark (`make bench`).
#
# On this machine, in one run: a canned Workers AI (Debian's nginx, one
# worker, real response bodies), a baseline nginx doing plain proxy_pass to
# it, and the cfcost gateway (conf/nginx.conf.in as shipped, a real key,
# its own redis-server, the aggregator when built).  Rounds alternate
# baseline and cfcost; medians are reported.  Ratios, not absolute numbers,
# compare across machines.
#
#   throughput   wrk -t2 -c64, saturated, BENCH_DURATION s per round
#   latency      wrk -t1 -c1, p50/p99 from every request's own time
#   records      every cfcost response is a 200, and the records that
#                reached Redis equal the requests sent
#   CPU          per request, in the saturated rounds, from /proc/<pid>/stat
#                (utime+stime): the nginx workers of each system from just
#                before to just after wrk; for cfcost also redis-server and
#                the aggregator, until the aggregator caught up with the
#                round's records (their work lags the traffic)
#   RSS          cfcost worker RSS before and after BENCH_RSS_REQUESTS
#   TTFB         streamed chat, time to the first body byte (bench/ttfb.c)
#   staleness    how long after its answer /api/usage counts a request,
#                idle and beside a saturating wrk -c32 (bench/staleness.pl)
#   /api/usage   p50/p99 at 10^3, 10^5 (and 10^7 with BENCH_BIG=1)
#                synthetic records, through the gateway with the admin token
#
# Output: a table on stdout, $BENCH_OUT/results-<time>.json and
# $BENCH_OUT/latest.json.  Exit status 0 when every check passed, 1 when a
# check failed, 2 when the bench could not run.
#
# Environment (defaults in brackets):
#   BENCH_ROUNDS [5]  BENCH_DURATION [10] s  BENCH_RSS_REQUESTS [1000000]
#   BENCH_TTFB_SAMPLES [200]  BENCH_USAGE_DURATION [3] s  BENCH_BIG [0]
#   BENCH_STALE_SAMPLES [200]  BENCH_STALE_LOAD [10] s
#   BENCH_CONNECTIONS [64]  BENCH_THREADS [2]  BENCH_WORKERS [2]
#   BENCH_TINY=1      1 round of 1 s, 2000 RSS requests, 10 TTFB samples,
#                     10 staleness samples (3 s of load), 10^3 records only
#                     (the `make test` smoke run)
#   BENCH_OUT         where results go [build/bench]
#   BENCH_AGG_ARGS    more cfcost-aggregator flags, split at spaces (to
#                     compare settings: BENCH_AGG_ARGS='--linger-rate 0')
#   BENCH_LAT_AGG_STOP=1  freeze the aggregator (SIGSTOP) during cfcost's
#                     one-connection runs, SIGCONT after: the latency
#                     without the accounting's work beside it (records
#                     wait in the streams; the checks still count them)
#   BENCH_AGG_NICE=N  renice the aggregator by N once started (does the
#                     accounting's CPU beside the requests matter?)
#   BENCH_KEEP=1      keep the run directory (logs, configs) even on success
#   BENCH_RPM=N       a rate limit of N requests a minute on the bench's
#                     user, to measure what enforcing it costs
#   BENCH_TAIL=N      instead of everything else: N requests on one
#                     connection to each system under a scheduler trace
#                     (perf), and where the slowest 1% waited to run
#                     (bench/reqtimes.c, bench/sched-tail.py)
#   BENCH_PERF=1      perf record -g the nginx workers (both systems), Redis
#                     and the aggregator during round 1's saturated runs:
#                     $BENCH_OUT/perf-SYSTEM-PROCESS.data, and Redis's
#                     INFO commandstats over cfcost's (reset before it):
#                     $BENCH_OUT/commandstats-cfcost.txt

set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bench=$root/bench

say()  { printf 'bench: %s\n' "$*" >&2; }
die()  { say "$*"; exit 2; }

# --------------------------------------------------------------------------
# settings

if [ "${BENCH_TINY:-0}" = 1 ]; then
    rounds=${BENCH_ROUNDS:-1}
    duration=${BENCH_DURATION:-1}
    rss_requests=${BENCH_RSS_REQUESTS:-2000}
    ttfb_samples=${BENCH_TTFB_SAMPLES:-10}
    stale_samples=${BENCH_STALE_SAMPLES:-10}
    stale_load_s=${BENCH_STALE_LOAD:-3}
    usage_duration=${BENCH_USAGE_DURATION:-1}
    usage_sizes="1000"
    tiny=1
else
    rounds=${BENCH_ROUNDS:-5}
    duration=${BENCH_DURATION:-10}
    rss_requests=${BENCH_RSS_REQUESTS:-1000000}
    ttfb_samples=${BENCH_TTFB_SAMPLES:-200}
    stale_samples=${BENCH_STALE_SAMPLES:-200}
    stale_load_s=${BENCH_STALE_LOAD:-10}
    usage_duration=${BENCH_USAGE_DURATION:-3}
    usage_sizes="1000 100000"
    tiny=0
fi
if [ "${BENCH_BIG:-0}" = 1 ]; then usage_sizes="$usage_sizes 10000000"; fi
connections=${BENCH_CONNECTIONS:-64}
threads=${BENCH_THREADS:-2}
workers=${BENCH_WORKERS:-2}
out=${BENCH_OUT:-$root/build/bench}

for v in rounds duration rss_requests ttfb_samples stale_samples \
         stale_load_s usage_duration connections threads workers; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer"
done

model='@cf/meta/llama-3.1-8b-instruct'
stream_model='@cf/meta/llama-3.2-1b-instruct'
account=bench-account
chat_body='{"model":"'$model'","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Where did Hello, World first appear?"}]}'
stream_body='{"model":"'$stream_model'","messages":[{"role":"user","content":"Hello"}],"stream":true}'

for cmd in nginx redis-server redis-cli wrk curl gcc perl timeout; do
    command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] ||
        die "$cmd is missing (make bench installs it: scripts/deps.sh)"
done
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
for f in build/ngx_http_cfcost_module.so build/cfcost; do
    [ -e "$root/$f" ] || die "$f is missing: run make (or make bench)"
done
agg_bin=$root/build/cfcost-aggregator
[ -x "$agg_bin" ] || agg_bin=

# --------------------------------------------------------------------------
# run directory and cleanup

mkdir -p "$root/build/bench" "$out"
run=$(mktemp -d "$root/build/bench/run.XXXXXX")
chmod 755 "$run"
mkdir -p "$run/tmp" "$run/gw/tmp"
chmod 777 "$run/tmp" "$run/gw/tmp"          # nginx workers run as nobody
[ ${#run} -lt 90 ] || die "run directory path too long for a unix socket: $run"

results=$run/results.jsonl
: > "$results"
declare -A PIDS=()                          # name -> pid

# Stops one nginx master (QUIT, bounded), then whatever of it is left.
stop_nginx() {
    local pid=$1 workers_left
    kill -0 "$pid" 2>/dev/null || return 0
    workers_left=$(pgrep -P "$pid" 2>/dev/null || true)
    kill -QUIT "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    for w in $workers_left; do kill -KILL "$w" 2>/dev/null || true; done
}

stop_pid() {
    local pid=$1
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.05; done
    kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for name in wrk sampler; do
        [ -n "${PIDS[$name]:-}" ] && stop_pid "${PIDS[$name]}"
    done
    for name in gateway baseline upstream; do
        [ -n "${PIDS[$name]:-}" ] && stop_nginx "${PIDS[$name]}"
    done
    for name in aggregator redis; do
        [ -n "${PIDS[$name]:-}" ] || continue
        kill -CONT "${PIDS[$name]}" 2>/dev/null    # BENCH_LAT_AGG_STOP
        stop_pid "${PIDS[$name]}"
    done
    wait 2>/dev/null || true
    if [ "$rc" -ne 0 ] || [ "${BENCH_KEEP:-0}" = 1 ]; then
        say "logs and configs kept in $run"
    else
        rm -rf "$run"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    perl -MIO::Socket::INET -e '
        my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1",
            LocalPort => 0, Listen => 1) or die "bind: $!\n";
        print $s->sockport, "\n";'
}

# wait_for SECONDS WHAT COMMAND...
wait_for() {
    local secs=$1 what=$2 i
    shift 2
    for ((i = 0; i < secs * 20; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    die "$what not ready within $secs s (logs in $run)"
}

# redis-cli as the admin (Redis's default user), the password in its environment only:
# radmin SECONDS ARGS...
radmin() {
    local secs=$1; shift
    REDISCLI_AUTH=$(cut -d' ' -f2 "$run/gw/redis-admin.auth") timeout "$secs" \
        redis-cli --no-auth-warning -s "$run/redis.sock" "$@"
}
rcli() { radmin 30 "$@"; }

# start_nginx NAME CONF: daemon off, in the background
start_nginx() {
    local name=$1 conf=$2
    "$nginx_bin" -t -q -p "$run/" -c "$conf" -e "$run/$name-start.log" ||
        die "nginx -t refused the $name configuration ($conf)"
    "$nginx_bin" -p "$run/" -c "$conf" -e "$run/$name-start.log" \
        > "$run/$name.out" 2>&1 &
    PIDS[$name]=$!
}

# workers_up MASTER: it runs all its workers
workers_up() { [ "$(pgrep -P "$1" 2>/dev/null | wc -l)" -ge "$workers" ]; }

worker_rss_kb() {      # sum of VmRSS of the workers of master $1
    local sum=0 kb
    for w in $(pgrep -P "$1"); do
        kb=$(awk '/^VmRSS:/ { print $2 }' "/proc/$w/status" 2>/dev/null || echo 0)
        sum=$((sum + ${kb:-0}))
    done
    echo "$sum"
}

# CPU time from /proc/<pid>/stat: utime + stime (fields 14 and 15, in
# clock ticks, all threads of the process), summed over PIDs; a process
# that is gone counts 0.  The fields are read after the last ") ", as the
# command name (field 2) may hold spaces or parentheses.
clk_tck=$(getconf CLK_TCK)
[[ $clk_tck =~ ^[1-9][0-9]*$ ]] || die "getconf CLK_TCK: '$clk_tck'"
proc_ticks() {
    local p s n=0 f
    for p in "$@"; do
        { read -r s < "/proc/$p/stat"; } 2>/dev/null || continue
        read -r -a f <<< "${s##*) }"
        n=$((n + f[11] + f[12]))
    done
    echo "$n"
}

# cpu_snapshot: "baseline_workers cfcost_workers redis aggregator now_ns",
# the ticks so far of each (the workers: every child of that nginx master)
# and the time
cpu_snapshot() {
    printf '%d %d %d %d %d\n' \
        "$(proc_ticks $(pgrep -P "${PIDS[baseline]}" 2>/dev/null))" \
        "$(proc_ticks $(pgrep -P "${PIDS[gateway]}" 2>/dev/null))" \
        "$(proc_ticks "${PIDS[redis]}")" \
        "$(proc_ticks ${PIDS[aggregator]:-})" \
        "$(date +%s%N)"
}

# --------------------------------------------------------------------------
# the C client

# build_client NAME: build/bench/NAME from bench/NAME.c, when older
build_client() {
    local bin=$root/build/bench/$1
    if [ ! -x "$bin" ] || [ "$bench/$1.c" -nt "$bin" ]; then
        gcc -std=c99 -O2 -Wall -Wextra -Werror -D_DEFAULT_SOURCE \
            -D_GNU_SOURCE -o "$bin.$$" "$bench/$1.c" &&
            mv -f "$bin.$$" "$bin" || die "cannot build bench/$1.c"
    fi
}
ttfb_bin=$root/build/bench/ttfb
build_client ttfb

# --------------------------------------------------------------------------
# machine

cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
[ -n "$cpu_model" ] || cpu_model=$(uname -m)
nproc_n=$(nproc)
kernel=$(uname -sr)
nginx_version=$("$nginx_bin" -v 2>&1 | sed 's|.*nginx/||')
wrk_version=$( (wrk -v 2>&1 || true) | awk 'NR == 1 { print $2 }')
redis_version=$(redis-server --version | sed 's/.* v=\([^ ]*\).*/\1/')
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
stamp=$(date -u +%Y%m%dT%H%M%SZ)

# --------------------------------------------------------------------------
# start everything

token=bench-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
up_port=$(free_port)
base_port=$(free_port)
gw_port=$(free_port)
while [ "$base_port" = "$up_port" ]; do base_port=$(free_port); done
while [ "$gw_port" = "$up_port" ] || [ "$gw_port" = "$base_port" ]; do
    gw_port=$(free_port)
done

say "run directory $run"

# Redis users per role, as make run has them (scripts/redis-acl)
"$root/scripts/redis-acl" "$run/gw"
redis-server --port 0 --unixsocket "$run/redis.sock" --unixsocketperm 777 \
    --dir "$run" --save "" --appendonly no --daemonize no \
    --aclfile "$run/gw/redis-users.acl" \
    --logfile "$run/redis.log" &
PIDS[redis]=$!
wait_for 10 "redis-server" rcli ping

# the aggregator, where the shipped configuration looks for it
# ($VAR/agg.sock); the gateway's /api/usage and /healthz lead there
agg_note=
if [ -n "$agg_bin" ]; then
    # started by root, nginx's workers are nobody: their identity counts
    trust=()
    [ "$(id -u)" = 0 ] && trust=(--trust-user nobody)
    "$agg_bin" --listen "unix:$run/gw/agg.sock" --redis "unix:$run/redis.sock" \
        --redis-auth "$run/gw/redis-aggregator.auth" \
        --consumer "bench-$$" --retention-days 0 --log-level warn "${trust[@]}" \
        ${BENCH_AGG_ARGS:-} \
        > "$run/aggregator.log" 2>&1 &
    PIDS[aggregator]=$!
    [ -n "${BENCH_AGG_NICE:-}" ] &&
        renice -n "$BENCH_AGG_NICE" -p "${PIDS[aggregator]}" >/dev/null
    wait_for 15 "the aggregator" curl -sf -o /dev/null \
        --unix-socket "$run/gw/agg.sock" http://aggregator/healthz
else
    agg_note="aggregator not built (build/cfcost-aggregator missing)"
    say "$agg_note: records are checked, /api/usage is not measured"
fi

# the canned Workers AI
"$root/scripts/render-conf" "$bench/upstream.conf.in" "$run/upstream.conf" \
    VAR="$run" PORT="$up_port" ACCOUNT="$account" STREAM_MODEL="$stream_model"
start_nginx upstream "$run/upstream.conf"
wait_for 10 "the canned upstream" curl -sf -o /dev/null -X POST -d '{}' \
    "http://127.0.0.1:$up_port/client/v4/accounts/$account/ai/run/$model"

# the baseline
"$root/scripts/render-conf" "$bench/baseline.conf.in" "$run/baseline.conf" \
    VAR="$run" WORKERS="$workers" PORT="$base_port" \
    UPSTREAM_HOSTPORT="127.0.0.1:$up_port" UPSTREAM_HOST=127.0.0.1 \
    CF_ACCOUNT_ID="$account" CF_API_TOKEN="$token" MODEL="$model" \
    STREAM_MODEL="$stream_model"
start_nginx baseline "$run/baseline.conf"

# the gateway: every placeholder of the shipped template, or a clear stop;
# the files it reads from $VAR: the admin and metrics tokens
cp "$root/build/ngx_http_cfcost_module.so" "$run/ngx_http_cfcost_module.so"
admin_token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
(umask 077; printf '%s\n' "$admin_token" > "$run/gw/admin-token")
(umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$run/gw/metrics-token")
declare -A GWV=(
    [MODULE]="$run/ngx_http_cfcost_module.so"
    [WORKERS]="$workers"
    [VAR]="$run/gw"
    [LOG_LEVEL]=notice
    [PRICING]="$root/conf/pricing.json"
    [REDIS]="unix:$run/redis.sock"
    [CF_ACCOUNT_ID]="$account"
    [CF_API_TOKEN]="$token"
    [UPSTREAM_HOSTPORT]="127.0.0.1:$up_port"
    [UPSTREAM_HOST]=127.0.0.1
    [UPSTREAM_SCHEME]=http
    [PORT]="$gw_port"
    [ROOT]="$root/dashboard"
)
template=$root/conf/nginx.conf.in
gw_args=()
unknown=()
for name in $(grep -o '@[A-Z][A-Z0-9_]*@' "$template" | tr -d @ | sort -u); do
    if [ -n "${GWV[$name]+set}" ]; then
        gw_args+=("$name=${GWV[$name]}")
    elif ! sed 's/#.*//' "$template" | grep -q "@$name@"; then
        gw_args+=("$name=")                # named in a comment only
    else
        unknown+=("@$name@")
    fi
done
[ ${#unknown[@]} -eq 0 ] ||
    die "conf/nginx.conf.in has placeholders bench/run.sh does not know:" \
        "${unknown[*]} -- give them a value in the GWV table of bench/run.sh"
"$root/scripts/render-conf" "$template" "$run/gateway.conf" "${gw_args[@]}"
start_nginx gateway "$run/gateway.conf"

wait_for 15 "the baseline nginx" curl -sf -o /dev/null -X POST \
    -d "$chat_body" "http://127.0.0.1:$base_port/api/ai/chat"
wait_for 15 "the cfcost gateway" curl -sf -o /dev/null \
    "http://127.0.0.1:$gw_port/api/ai/models"
for name in baseline gateway; do
    wait_for 10 "the $name workers" workers_up "${PIDS[$name]}"
done

key=$("$root/build/cfcost" --redis "unix:$run/redis.sock" \
    --redis-auth "$run/gw/redis-cli.auth" \
    keys create --user bench --name "bench/run.sh" | tail -n 1)
[[ $key == cfk_* ]] || die "could not create an API key: $key"

# BENCH_RPM=N: the bench's user limited to N requests a minute (cfcost
# limits), so every cfcost request runs the rate-limit script; N must be
# high enough never to refuse one (at most 1,000,000: a burst of that
# many, then 16,667 a second)
if [ -n "${BENCH_RPM:-}" ]; then
    "$root/build/cfcost" --redis "unix:$run/redis.sock" \
        --redis-auth "$run/gw/redis-cli.auth" \
        limits set --user bench --rpm "$BENCH_RPM" > /dev/null ||
        die "could not set BENCH_RPM=$BENCH_RPM"
    say "rate limit: $BENCH_RPM requests a minute on the bench's user"
    sleep 1.2                   # past the key cache's ttl
fi

if [ -n "$agg_bin" ]; then
    wait_for 10 "the gateway's /healthz (the aggregator behind it)" \
        curl -sf -o /dev/null "http://127.0.0.1:$gw_port/healthz"
fi

# one request each way, checked by hand: the bench must measure 200s
probe=$(curl -s -o "$run/probe.json" -w '%{http_code}' -X POST \
    -H "X-API-Key: $key" -d "$chat_body" "http://127.0.0.1:$gw_port/api/ai/chat")
[ "$probe" = 200 ] && grep -q '"cost_usd"' "$run/probe.json" ||
    die "cfcost answered $probe to the probe: $(head -c 300 "$run/probe.json")"
records_expected=1

rss_start=$(worker_rss_kb "${PIDS[gateway]}")

# --------------------------------------------------------------------------
# measuring

emit() { printf '%s\n' "$1" >> "$results"; }

# the writers' record streams (cfcost:writers)
record_streams() {
    rcli smembers cfcost:writers 2>/dev/null |
        grep -E '^w[0-9a-f]{16}$' | sed 's/.*/cfcost:rec:{&}/'
}

# records held, summed over the writers' streams
# records_len: the records in every writer's stream (a batch entry holds
# several, cfcost_schema.h).  Streams only grow during the bench (no
# retention), so each call counts from where the last one stopped, kept
# in $reccount_dir (one file per stream: records counted, next id), by
# scripts/count-records.lua (1,000 entries a call).
reccount_dir=
count_lua=$(cat "$root/scripts/count-records.lua")
records_len() {
    local s f c from out add next done total=0
    local dir=${reccount_dir:-$run/reccount}
    mkdir -p "$dir"
    for s in $(record_streams); do
        f=$dir/${s//[^a-z0-9]/_}
        c=0 from=-
        [ -f "$f" ] && read -r c from < "$f"
        while :; do
            out=$(rcli eval "$count_lua" 1 "$s" "$from" 2>/dev/null) ||
                out=
            add=$(sed -n 1p <<< "$out")
            next=$(sed -n 2p <<< "$out")
            done=$(sed -n 3p <<< "$out")
            case "$add" in ''|*[!0-9]*) break ;; esac
            c=$((c + add)) from=$next
            [ "$done" = 1 ] && break
        done
        echo "$c $from" > "$f"
        total=$((total + c))
    done
    echo "$total"
}

# group_field NAME: the value after the line NAME in XINFO GROUPS, summed
# over the streams ("x" when some stream does not tell)
group_field() {
    local s v n=0
    for s in $(record_streams); do
        v=$(rcli xinfo groups "$s" 2>/dev/null |
            awk -v f="$1" 'prev == f { print; exit } { prev = $0 }')
        case "$v" in ''|*[!0-9]*) echo x; return ;; esac
        n=$((n + v))
    done
    echo "$n"
}

# gw_records FIELD: a count of the gateway's records (cfcost_status, from
# its shared memory: no Redis work): made, stored, queued...
gw_records() {
    curl -s --max-time 5 "http://127.0.0.1:$gw_port/cfcost/status" |
        sed -n "s/.*\"records\":{[^}]*\"$1\":\([0-9-]*\).*/\1/p"
}

# Waits (bounded) until the gateway's queues reached Redis (its own count
# of records stored says so) and the aggregator caught up, so that
# neither steals the next measurement's CPU.  Cheap: no record is counted
# in Redis here (that reads every entry: see settle).
wait_settled() {
    local want=$1 i lag pending
    for ((i = 0; i < 400; i++)); do          # 20 s
        [ "$(gw_records queued)" = 0 ] &&
            [ "$(gw_records stored)" -ge "$want" ] 2>/dev/null && break
        sleep 0.05
    done
    sleep 0.2                                # late extras would show now
    if [ -n "$agg_bin" ]; then
        for ((i = 0; i < 1200; i++)); do     # 60 s
            lag=$(group_field lag)
            pending=$(group_field pending)
            [ "${lag:-x}" = 0 ] && [ "${pending:-x}" = 0 ] && break
            sleep 0.05
        done
    fi
}

# wait_settled, then the records in Redis, counted (printed).
settle() {
    wait_settled "$1"
    records_len
}

check_records() {     # check_records PHASE
    local len
    len=$(settle "$records_expected")
    if [ "$len" != "$records_expected" ]; then
        say "record check failed after $1: $len records in Redis, requests sent $records_expected"
    fi
    emit "{\"type\":\"records\",\"phase\":\"$1\",\"expected\":$records_expected,\"xlen\":$len,\"xlen_at_end\":${xlen_at_end:-0}}"
    xlen_at_end=0
}

# perf_start SYSTEM PHASE ROUND / perf_stop: with BENCH_PERF=1, one
# perf record per process group for round 1's saturated run of SYSTEM
perf_pids=()
perf_syscalls=$(printf 'syscalls:sys_enter_%s,' accept4 close connect \
    epoll_ctl epoll_wait futex getpid getrandom getsockopt openat pread64 \
    pwrite64 read readv recvfrom sendto setsockopt shutdown socket write \
    writev)
perf_syscalls=${perf_syscalls%,}
perf_start() {
    perf_pids=()
    [ "${BENCH_PERF:-0}" = 1 ] && [ "$2" = saturated ] && [ "$3" = 1 ] ||
        return 0
    local name pids
    mkdir -p "$out"
    for name in nginx redis aggregator; do
        case $name in
            nginx) if [ "$1" = cfcost ]; then
                       pids=$(pgrep -d, -P "${PIDS[gateway]}")
                   else
                       pids=$(pgrep -d, -P "${PIDS[baseline]}")
                   fi ;;
            redis) [ "$1" = cfcost ] || continue; pids=${PIDS[redis]} ;;
            aggregator) [ "$1" = cfcost ] && [ -n "${PIDS[aggregator]:-}" ] ||
                           continue
                       pids=${PIDS[aggregator]} ;;
        esac
        perf record -q -F 1999 -g -p "$pids" \
            -o "$out/perf-$1-$name.data" > "$run/perf-$1-$name.log" 2>&1 &
        perf_pids+=($!)
        # and how many of each system call
        perf stat -x, -o "$out/perf-$1-$name.syscalls" -e "$perf_syscalls" \
            -p "$pids" > /dev/null 2>&1 &
        perf_pids+=($!)
    done
    sleep 0.3
}
perf_stop() {
    local p
    for p in "${perf_pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
    for p in "${perf_pids[@]}"; do wait "$p" 2>/dev/null || true; done
    perf_pids=()
}

# run_wrk SYSTEM PHASE ROUND MODE -- WRK-ARGS...: runs wrk with chat.lua
# against SYSTEM (baseline, cfcost, or usage: cfcost's /api/usage, which
# writes no record), emits its JSON line, and
# leaves the number of requests it sent in $last_sent.  WRK_PATH,
# WRK_METHOD, WRK_BODY, WRK_HEADERS, WRK_TIMEOUT override the chat request.
last_sent=0
last_requests=0
cpu_at_start=
cpu_at_wrk_end=
run_wrk() {
    local system=$1 phase=$2 round=$3 mode=$4 log line port path
    shift 5
    case $system in
        baseline)   port=$base_port ;;
        cfcost)     port=$gw_port ;;
        usage)      port=$gw_port ;;
        *)          die "run_wrk: unknown system $system" ;;
    esac
    path=${WRK_PATH:-/api/ai/chat}
    log="$run/wrk-$phase-$system-$round-$((++wrk_runs)).out"
    perf_start "$system" "$phase" "$round"
    cpu_at_start=$(cpu_snapshot)
    BENCH_MODE=$mode BENCH_BODY=${WRK_BODY-$chat_body} \
    BENCH_METHOD=${WRK_METHOD:-POST} \
    BENCH_HEADERS=${WRK_HEADERS-X-API-Key: $key} \
        timeout -k 5 "${WRK_TIMEOUT:-$((duration + 60))}" \
        wrk --timeout 10s -s "$bench/chat.lua" "$@" \
            "http://127.0.0.1:$port$path" > "$log" 2>&1 &
    PIDS[wrk]=$!                # waited for, so a signal is handled at once
    wait "${PIDS[wrk]}" || true
    cpu_at_wrk_end=$(cpu_snapshot)
    unset 'PIDS[wrk]'
    perf_stop
    line=$(sed -n 's/^BENCH_JSON //p' "$log")
    [ -n "$line" ] || die "wrk printed no result for $phase/$system (see $log)"
    emit "{\"type\":\"wrk\",\"system\":\"$system\",\"phase\":\"$phase\",\"round\":$round,\"path\":\"$path\",\"result\":$line}"
    last_sent=$(printf '%s' "$line" | sed -n 's/.*"sent":\([0-9]*\).*/\1/p')
    last_requests=$(printf '%s' "$line" | sed -n 's/.*"requests":\([0-9]*\).*/\1/p')
    if [ "$system" = cfcost ]; then
        records_expected=$((records_expected + last_sent))
        xlen_at_end=$(gw_records stored)     # reached Redis by wrk's end
    fi
    case $line in
        *'"non200":0,'*) ;;
        *) say "$system answered non-200 in $phase (see $log)" ;;
    esac
}
wrk_runs=0
xlen_at_end=0

# after_run SYSTEM PHASE: the record check after cfcost, else just settle
after_run() {
    if [ "$1" = cfcost ]; then
        check_records "$2"
    else
        wait_settled 0
    fi
}

# emit_cpu SYSTEM ROUND: the CPU line of a saturated round, from the
# snapshots taken by run_wrk (wrk's start and end) and $cpu_settled (after
# after_run: the records in Redis, the aggregator caught up).  Ticks:
# nginx (the workers of SYSTEM) from start to wrk's end, and to settled;
# redis and aggregator from start to wrk's end, and to settled.
emit_cpu() {
    local system=$1 round=$2 col a b c
    read -r -a a <<< "$cpu_at_start"
    read -r -a b <<< "$cpu_at_wrk_end"
    read -r -a c <<< "$cpu_settled"
    if [ "$system" = cfcost ]; then col=1; else col=0; fi
    emit "{\"type\":\"cpu\",\"system\":\"$system\",\"round\":$round,\"clk_tck\":$clk_tck,\"requests\":${last_requests:-0},\"sent\":${last_sent:-0},\"wrk_ms\":$(((b[4] - a[4]) / 1000000)),\"settle_ms\":$(((c[4] - b[4]) / 1000000)),\"aggregator\":$([ -n "$agg_bin" ] && echo true || echo false),\"ticks\":{\"nginx\":$((b[col] - a[col])),\"nginx_to_settled\":$((c[col] - a[col])),\"redis_wrk\":$((b[2] - a[2])),\"redis\":$((c[2] - a[2])),\"aggregator_wrk\":$((b[3] - a[3])),\"aggregator\":$((c[3] - a[3]))}}"
}
cpu_settled=

sat_args=(-t"$threads" -c"$connections" -d"${duration}s")
lat_args=(-t1 -c1 -d"${duration}s")

# --------------------------------------------------------------------------
# BENCH_TAIL=N: instead of the rounds, N requests on one connection to each
# system under a scheduler trace, and where the slowest of them waited
# (bench/sched-tail.py)

if [ -n "${BENCH_TAIL:-}" ]; then
    [[ $BENCH_TAIL =~ ^[1-9][0-9]*$ ]] || die "BENCH_TAIL must be a positive integer"
    command -v perf >/dev/null || die "BENCH_TAIL needs perf"
    build_client reqtimes
    for system in baseline cfcost; do
        if [ "$system" = cfcost ]; then port=$gw_port; else port=$base_port; fi
        say "tail: $BENCH_TAIL requests to $system, one connection, traced"
        "$root/build/bench/reqtimes" -p "$port" -n 2000 -b "$chat_body" \
            -H "X-API-Key: $key" > /dev/null || die "reqtimes failed (warm-up)"
        perf record -q -k CLOCK_MONOTONIC -a -m 64M \
            -e sched:sched_switch -e sched:sched_wakeup \
            -o "$out/tail-$system.data" -- \
            "$root/build/bench/reqtimes" -p "$port" -n "$BENCH_TAIL" \
                -b "$chat_body" -H "X-API-Key: $key" \
                > "$out/tail-$system.times" 2> "$run/tail-$system.err" ||
            die "reqtimes failed (see $run/tail-$system.err)"
        perf script -i "$out/tail-$system.data" \
            -F cpu,time,comm,pid,event,trace > "$run/tail-$system.trace" \
            2>/dev/null
        echo "$system:"
        python3 "$bench/sched-tail.py" "$out/tail-$system.times" \
            "$run/tail-$system.trace" nginx reqtimes | sed 's/^/  /'
    done
    exit 0
fi

say "warm-up: 1 s each"
for system in baseline cfcost; do
    run_wrk "$system" warmup 0 rate -- -t"$threads" -c"$connections" -d1s
done
check_records warmup

for ((r = 1; r <= rounds; r++)); do
    # ABBA: each system goes first in every other round
    if ((r % 2)); then order="baseline cfcost"; else order="cfcost baseline"; fi
    say "round $r/$rounds: saturated ($order), ${duration} s each"
    for system in $order; do
        stats=
        if [ "${BENCH_PERF:-0}" = 1 ] && [ "$r" = 1 ] && [ "$system" = cfcost ]
        then
            stats=1
            rcli config resetstat > /dev/null
        fi
        run_wrk "$system" saturated "$r" rate -- "${sat_args[@]}"
        # the CPU snapshot before the record check: it reads every entry
        wait_settled "$([ "$system" = cfcost ] && echo "$records_expected" || echo 0)"
        cpu_settled=$(cpu_snapshot)
        after_run "$system" "saturated-$r"
        emit_cpu "$system" "$r"
        # Redis's time per command over the round's records
        [ -z "$stats" ] ||
            { echo "records $last_sent"; rcli info commandstats; } |
            tr -d '\r' > "$out/commandstats-cfcost.txt"
    done
    say "round $r/$rounds: one connection ($order), ${duration} s each"
    for system in $order; do
        lat_stop=
        if [ "$system" = cfcost ] && [ "${BENCH_LAT_AGG_STOP:-0}" = 1 ] &&
           [ -n "${PIDS[aggregator]:-}" ]; then
            lat_stop=${PIDS[aggregator]}
            kill -STOP "$lat_stop"
        fi
        run_wrk "$system" latency "$r" latency -- "${lat_args[@]}"
        [ -z "$lat_stop" ] || kill -CONT "$lat_stop"
        after_run "$system" "latency-$r"
    done
done

# sample_rss MASTER: every second, "seconds rss_kb xlen" until killed
sample_rss() {
    local t=0
    reccount_dir=$run/reccount-rss       # its own counts: it runs beside
    while :; do
        printf '%d %d %d\n' "$t" "$(worker_rss_kb "$1")" \
            "$(records_len)"
        sleep 1
        t=$((t + 1))
    done
}

say "RSS: $rss_requests requests to cfcost"
rss_before=$(worker_rss_kb "${PIDS[gateway]}")
donedir=$run/rss-done
mkdir -p "$donedir"
sample_rss "${PIDS[gateway]}" > "$run/rss-samples.txt" 2>/dev/null &
PIDS[sampler]=$!
WRK_TIMEOUT=$((rss_requests / 200 + 120)) \
BENCH_COUNT=$rss_requests BENCH_THREADS=$threads BENCH_DONE_DIR=$donedir \
    run_wrk cfcost rss 0 count -- -t"$threads" -c"$connections" \
        -d"$((rss_requests / 200 + 60))s"
check_records rss
sleep 0.5
rss_after=$(worker_rss_kb "${PIDS[gateway]}")
stop_pid "${PIDS[sampler]}"
unset 'PIDS[sampler]'
rss_series=$(awk '{ printf "%s[%d,%d,%d]", (NR > 1 ? "," : ""), $1, $2, $3 }' \
    "$run/rss-samples.txt")
emit "{\"type\":\"rss\",\"workers\":$workers,\"start_kb\":$rss_start,\"before_kb\":$rss_before,\"after_kb\":$rss_after,\"requests\":$last_sent,\"series\":[$rss_series]}"

say "streaming TTFB: $ttfb_samples requests each"
ttfb_json=$(timeout -k 5 $((ttfb_samples + 60)) "$ttfb_bin" -n "$ttfb_samples" \
    -b "$stream_body" -H "X-API-Key: $key" \
    "baseline=$base_port/api/ai/chat-stream" "cfcost=$gw_port/api/ai/chat") ||
    say "TTFB: not every streamed request succeeded: $ttfb_json"
[ -n "$ttfb_json" ] || die "the TTFB client printed nothing"
emit "{\"type\":\"ttfb\",\"samples\":$ttfb_samples,\"result\":$ttfb_json}"
records_expected=$((records_expected + ttfb_samples))
check_records ttfb


# --------------------------------------------------------------------------
# staleness: how long after its answer /api/usage counts a request, idle
# and with the gateway saturated by other traffic (bench/staleness.pl, a
# key of its own user)

stale_sent() {          # the requests a staleness.pl result says it sent
    printf '%s' "$1" | sed -n 's/.*"n":\([0-9]*\).*"lost":\([0-9]*\).*/\1 \2/p' |
        awk '{ print $1 + $2 }'
}

if [ -n "$agg_bin" ]; then
    stale_key=$("$root/build/cfcost" --redis "unix:$run/redis.sock" \
        --redis-auth "$run/gw/redis-cli.auth" \
        keys create --user staleness --name "bench/run.sh" | tail -n 1)
    [[ $stale_key == cfk_* ]] || die "could not create an API key: $stale_key"

    say "staleness: up to $stale_samples requests, idle"
    stale_idle=$(perl "$bench/staleness.pl" "$gw_port" "$stale_key" \
        "$chat_body" "$stale_samples" 60) || die "staleness.pl failed (idle)"
    records_expected=$((records_expected + $(stale_sent "$stale_idle")))

    say "staleness: up to $stale_samples requests, wrk -c32 for ${stale_load_s}s beside"
    BENCH_MODE=rate BENCH_BODY=$chat_body BENCH_METHOD=POST \
    BENCH_HEADERS="X-API-Key: $key" \
        timeout -k 5 $((stale_load_s + 60)) \
        wrk --timeout 10s -s "$bench/chat.lua" -t"$threads" -c32 \
            -d"${stale_load_s}s" "http://127.0.0.1:$gw_port/api/ai/chat" \
            > "$run/wrk-staleness.out" 2>&1 &
    PIDS[wrk]=$!
    sleep 1                 # the load first
    stale_load=$(perl "$bench/staleness.pl" "$gw_port" "$stale_key" \
        "$chat_body" "$stale_samples" $((stale_load_s - 2))) ||
        die "staleness.pl failed (under load)"
    wait "${PIDS[wrk]}" || true
    unset 'PIDS[wrk]'
    line=$(sed -n 's/^BENCH_JSON //p' "$run/wrk-staleness.out")
    [ -n "$line" ] || die "wrk printed no result for staleness (see $run/wrk-staleness.out)"
    emit "{\"type\":\"wrk\",\"system\":\"cfcost\",\"phase\":\"staleness\",\"round\":0,\"path\":\"/api/ai/chat\",\"result\":$line}"
    records_expected=$((records_expected + $(stale_sent "$stale_load")
        + $(printf '%s' "$line" | sed -n 's/.*"sent":\([0-9]*\).*/\1/p')))
    emit "{\"type\":\"staleness\",\"idle\":$stale_idle,\"loaded\":$stale_load,\"load_connections\":32,\"load_s\":$stale_load_s}"
    check_records staleness
fi

dropped=$(rcli hget cfcost:gateway records_dropped)
emit "{\"type\":\"dropped\",\"records_dropped\":${dropped:-0}}"
[ "${dropped:-0}" = 0 ] || say "the gateway dropped $dropped records"


# --------------------------------------------------------------------------
# /api/usage at growing record counts, as users reach it: through the
# gateway (cfcost usage checks the admin token) to the aggregator

usage_total() {
    curl -s --max-time 5 -H "X-API-Key: $admin_token" \
        "http://127.0.0.1:$gw_port/api/usage" |
        sed -n 's/.*"total_requests":\([0-9]*\).*/\1/p'
}

usage_code=000
if [ -n "$agg_bin" ]; then
    usage_code=$(curl -s -o "$run/usage-probe.json" -w '%{http_code}' \
        -H "X-API-Key: $admin_token" "http://127.0.0.1:$gw_port/api/usage")
    [ "$usage_code" = 200 ] || {
        agg_note="the gateway's /api/usage answered $usage_code"
        say "$agg_note: /api/usage is not measured"
    }
fi
if [ "$usage_code" = 200 ]; then
    loaded=0
    day=$(date -u +%Y-%m-%d)
    from=$(date -u -d '30 days ago' +%Y-%m-%d)
    for size in $usage_sizes; do
        add=$((size - loaded))
        say "/api/usage: loading $add synthetic records (total $size)"
        t0=$(date +%s%N)
        perl "$bench/gen-records.pl" "$add" "$loaded" |
            radmin $((add / 2000 + 120)) --pipe \
            > "$run/pipe-$size.out" 2>&1 ||
            die "redis-cli --pipe failed (see $run/pipe-$size.out)"
        grep -q 'errors: 0,' "$run/pipe-$size.out" ||
            die "redis-cli --pipe reported errors (see $run/pipe-$size.out)"
        loaded=$size
        want=$(records_len)
        applied=
        for ((i = 0; i < (add / 1000 + 60) * 10; i++)); do
            [ "$(usage_total)" = "$want" ] && { applied=1; break; }
            sleep 0.1
        done
        apply_ms=$((($(date +%s%N) - t0) / 1000000))
        if [ -z "$applied" ]; then
            say "the aggregator did not count all $want records in time" \
                "(total_requests $(usage_total))"
        fi
        emit "{\"type\":\"usage_load\",\"records\":$size,\"stream\":$want,\"applied\":${applied:-0},\"load_and_apply_s\":$((apply_ms / 1000)).$(printf %03d $((apply_ms % 1000)))}"
        for query in "/api/usage" "/api/usage?from=$from&to=$day"; do
            WRK_PATH=$query WRK_METHOD=GET WRK_BODY= \
            WRK_HEADERS="X-API-Key: $admin_token" \
            WRK_TIMEOUT=$((usage_duration + 60)) \
                run_wrk usage "usage-$size" 0 latency -- -t1 -c1 \
                    -d"${usage_duration}s"
        done
    done
fi

# --------------------------------------------------------------------------
# report

# the gateway's error log, by level (the lines: $run/gw/error.log)
errlog() {
    local level n
    for level in emerg alert crit error warn; do
        n=$(grep -c "\[$level\]" "$run/gw/error.log" 2>/dev/null || true)
        printf '%s"%s":%d' "$([ "$level" = emerg ] || echo ,)" "$level" "${n:-0}"
    done
}
emit "{\"type\":\"errorlog\",\"counts\":{$(errlog)},\"sample\":\"$(grep -m1 -E '\[(emerg|alert|crit|error)\]' "$run/gw/error.log" 2>/dev/null | cut -c1-200 | tr -d '"\\' || true)\"}"

meta=$(printf '{"type":"meta","started":"%s","stamp":"%s","tiny":%d,"machine":{"nproc":%d,"cpu":"%s","kernel":"%s","nginx":"%s","wrk":"%s","redis":"%s"},"settings":{"rounds":%d,"duration_s":%d,"connections":%d,"threads":%d,"workers":%d,"rss_requests":%d,"ttfb_samples":%d,"usage_duration_s":%d,"usage_sizes":[%s],"model":"%s","stream_model":"%s"},"aggregator":%s}' \
    "$started" "$stamp" "$tiny" "$nproc_n" "${cpu_model//\"/}" "$kernel" \
    "$nginx_version" "$wrk_version" "$redis_version" "$rounds" "$duration" \
    "$connections" "$threads" "$workers" "$rss_requests" "$ttfb_samples" \
    "$usage_duration" "$(echo $usage_sizes | tr ' ' ,)" "$model" "$stream_model" \
    "$([ -z "$agg_note" ] && echo '"running"' || echo "\"$agg_note\"")")
emit "$meta"

rc=0
perl "$bench/report.pl" "$results" "$out/results-$stamp.json" || rc=$?
[ "$rc" -le 1 ] || die "bench/report.pl failed (raw results in $results)"
cp "$out/results-$stamp.json" "$out/latest.json.tmp"
mv -f "$out/latest.json.tmp" "$out/latest.json"
say "results: $out/results-$stamp.json (and latest.json)"
exit "$rc"

#!/usr/bin/env bash
# Installs the Debian packages cfcost needs to build, run and test, when any
# is missing.  Uses sudo when not root.  Idempotent and quiet when done.
set -euo pipefail

pkgs=(
    nginx nginx-dev           # Debian's nginx 1.22 and its source/headers
    libhiredis-dev libjansson-dev libevent-dev libcurl4-openssl-dev
    libssl-dev libpcre2-dev zlib1g-dev   # what nginx's configure probes
    redis-server python3 gcc make perl wrk ca-certificates curl
    libasan8 libubsan1        # make test-sanitize (gcc 12's runtimes)
    chromium                  # the dashboard test drives it headless
)

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" \
        || missing+=("$p")
done

[ ${#missing[@]} -eq 0 ] && exit 0

echo "cfcost: installing Debian packages: ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
# Debian starts the packaged services; cfcost runs its own.
for svc in nginx redis-server; do
    $sudo service "$svc" stop >/dev/null 2>&1 || true
done

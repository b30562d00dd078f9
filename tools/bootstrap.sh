#!/usr/bin/env bash
# Makes a fresh Debian 12 machine (Node/npm, root) ready for PnO, and does nothing when it is:
# the Debian packages the project uses, the pinned Deno binary from npm, and the native
# libraries. Safe to run any number of times; ./pno runs it before every command.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
quiet=0
[ "${1:-}" = "--quiet" ] && quiet=1
say() { [ "$quiet" = 1 ] || echo "bootstrap: $*" >&2; }

packages=(libdpdk-dev pkg-config build-essential make iproute2 iputils-ping iputils-arping
  ethtool tcpdump tshark strace procps netcat-openbsd redis-server redis-tools lighttpd haproxy
  nginx-light memcached libmemcached-tools wrk iperf3 curl prometheus chromium)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "bootstrap: installing Debian packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts these services on install; PnO starts its own instances when it needs them.
  for svc in redis-server lighttpd haproxy nginx memcached iperf3 prometheus; do
    systemctl disable --now "$svc" >/dev/null 2>&1 || service "$svc" stop >/dev/null 2>&1 || true
  done
fi

deno="$root/.tools/node_modules/deno/deno"
if ! [ -x "$deno" ] || ! "$deno" --version 2>/dev/null | grep -q '^deno 2.9.6 '; then
  echo "bootstrap: installing Deno 2.9.6 from npm into .tools/" >&2
  (cd "$root/.tools" && npm install --no-audit --no-fund --silent)
fi

# npm packages of the import map (uplot for the dashboard, playwright-core for its test).
if ! [ -e "$root/node_modules/uplot/dist/uPlot.iife.min.js" ] ||
  ! [ -e "$root/node_modules/playwright-core/package.json" ]; then
  say "installing npm packages of deno.json into node_modules/"
  (cd "$root" && "$deno" install --quiet >&2)
fi

if ! make -s -q -C "$root/ffi" all 2>/dev/null; then
  say "building native libraries (ffi/)"
  make -s -C "$root/ffi" all >&2
fi
say "ready"

#!/usr/bin/env bash
# Installs the system packages Wrenn needs on a Debian 12 host: gVisor (runsc from
# bookworm-backports, see docs/operations.md for why), debootstrap for base templates,
# networking tools, and PostgreSQL/Redis for the test suite. Idempotent.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
  echo "install-deps.sh must run as root" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive

# The backports suite lives on the same mirror as the machine's configured Debian source.
mirror_uri() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    if grep -qE '^Suites:.*\bbookworm\b' "$f"; then
      awk '/^URIs:/ {print $2; exit}' "$f"
      return
    fi
  done
  # No `| head` here or below: under pipefail, a writer cut off by head exits 141 and fails the script.
  local uri
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    uri=$(awk '$1 == "deb" && $0 ~ / bookworm / { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' "$f")
    if [ -n "$uri" ]; then
      echo "$uri"
      return
    fi
  done
}

if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  uri=$(mirror_uri)
  if [ -z "$uri" ]; then
    echo "cannot find the configured Debian mirror in apt's sources" >&2
    exit 1
  fi
  cat >/etc/apt/sources.list.d/wrenn-backports.sources <<SRC
Types: deb
URIs: $uri
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi

apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  debootstrap iproute2 nftables util-linux e2fsprogs procps psmisc ca-certificates make \
  postgresql redis-server >/dev/null
apt-get install -y -qq --no-install-recommends -t bookworm-backports runsc >/dev/null

# The port proxy's names on a single box are `<port>-<capsule id>.localhost:<port>`: nss-myhostname
# resolves every `*.localhost` name to loopback (browsers do so themselves; curl, Python and the
# SDK ask the system). Its package puts `myhostname` into nsswitch.conf's hosts line; a line
# edited by hand keeps its own order, so it is added after `files` only where it is missing.
apt-get install -y -qq --no-install-recommends libnss-myhostname >/dev/null
if ! grep -qE '^hosts:.*[[:space:]]myhostname([[:space:]]|$)' /etc/nsswitch.conf; then
  if grep -qE '^hosts:.*[[:space:]]files([[:space:]]|$)' /etc/nsswitch.conf; then
    sed -i -E '/^hosts:/ s/([[:space:]])files([[:space:]]|$)/\1files myhostname\2/' /etc/nsswitch.conf
  elif grep -qE '^hosts:' /etc/nsswitch.conf; then
    sed -i -E '/^hosts:/ s/^hosts:[[:space:]]*/&myhostname /' /etc/nsswitch.conf
  else
    echo 'hosts:          files myhostname dns' >>/etc/nsswitch.conf
  fi
fi
if ! getent hosts wrenn-check.localhost >/dev/null; then
  echo "*.localhost does not resolve: check the hosts line of /etc/nsswitch.conf" >&2
  exit 1
fi
# Node.js builds the dashboard; Debian 12's own is too old for it, so only when none is there.
if ! command -v npm >/dev/null 2>&1; then
  apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null || true
fi

if ! command -v uv >/dev/null 2>&1; then
  if ! python3 -m pip --version >/dev/null 2>&1; then
    apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
  fi
  # Debian's python3 refuses system-wide pip installs (PEP 668); uv is a standalone tool.
  python3 -m pip install --quiet uv 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages uv
fi
version=$(runsc --version)
echo "${version%%$'\n'*}"

#!/usr/bin/env bash
# What `make test` and `make run` need beside Python and Go: PostgreSQL (the history and built-in
# jobs' database), Prometheus' promtool and server (rules, dashboard, live scrape) and openssl.
# Installs what is missing from Debian's packages when it can (root with apt-get), else says what
# to install and stops: no test skips because a tool is absent.
set -euo pipefail
command -v go >/dev/null || { echo "Go is needed to build the test control plane; install Go 1.22 or newer" >&2; exit 1; }
need=()
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
{ command -v promtool >/dev/null || [ -x /usr/bin/promtool ]; } || need+=(prometheus)
command -v openssl >/dev/null || need+=(openssl)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "missing: ${need[*]}; install them (Debian: sudo apt-get install ${need[*]}) and run again" >&2
  exit 1
fi
echo "installing ${need[*]}"
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian starts the packaged services; the tests run their own instances.
systemctl stop prometheus postgresql >/dev/null 2>&1 || true

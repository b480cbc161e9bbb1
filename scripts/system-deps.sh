#!/usr/bin/env bash
# Install the Debian packages fleetcare needs, only those that are missing.
# mosquitto: the broker the tests and the demo start; postgresql: the second database backend;
# chromium: the headless browser of the web console's tests (Playwright drives /usr/bin/chromium).
set -euo pipefail

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v pg_isready >/dev/null 2>&1 || need+=(postgresql)
command -v chromium >/dev/null 2>&1 || need+=(chromium)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null; then
    echo "missing Debian packages: ${need[*]} (run as root or install them)" >&2
    exit 1
  fi
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "installing Debian packages: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # The packaged broker would grab port 1883; the project starts its own brokers.
  if [[ " ${need[*]} " == *" mosquitto "* ]]; then
    $SUDO systemctl disable --now mosquitto >/dev/null 2>&1 || true
  fi
fi

# PostgreSQL: start the local cluster if it is installed but not running (tests skip PG otherwise).
if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1 || true
  fi
fi
exit 0

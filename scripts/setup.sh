#!/usr/bin/env bash
# Prepare this checkout on a fresh Debian machine: a virtual environment with the
# project and its tools, plus the system packages the tests need (Debian's
# redis-server and Chromium). Safe to run again: it only installs what is missing.
#
#   scripts/setup.sh          venv + project (enough for the demo)
#   scripts/setup.sh --test   also redis-server, Chromium and the test tools
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($python --version)"
  "$python" -m venv .venv
fi

stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)-$want_test
if [ ! -f "$stamp" ]; then
  echo "setup: installing the project into .venv"
  .venv/bin/python -m pip install --quiet --upgrade pip
  if [ "$want_test" = 1 ]; then
    .venv/bin/python -m pip install --quiet -e '.[dev]'
  else
    .venv/bin/python -m pip install --quiet -e .
  fi
  touch "$stamp"
fi

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "setup: installing Debian packages: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

if [ "$want_test" = 1 ]; then
  apt_install redis-server redis-tools chromium
  # The packaged service is not needed: the tests start their own servers.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet redis-server 2>/dev/null; then
    systemctl stop redis-server || true
  fi
fi
echo "setup: ready"

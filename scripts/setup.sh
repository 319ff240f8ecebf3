#!/usr/bin/env bash
# Idempotent set-up of a fresh Debian machine for MaaS-Base: system packages, a Docker engine that
# answers, and a virtual environment (.venv) with the project and its test tools installed.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v dockerd >/dev/null 2>&1 || need_apt+=(docker.io)
command -v git >/dev/null 2>&1 || need_apt+=(git)
[ -x /bin/busybox ] && busybox --list 2>/dev/null | grep -qx httpd || need_apt+=(busybox-static)
command -v mmdebstrap >/dev/null 2>&1 || need_apt+=(mmdebstrap)
command -v docker-compose >/dev/null 2>&1 || need_apt+=(docker-compose)
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v docker-registry >/dev/null 2>&1 || need_apt+=(docker-registry)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  echo "setup: starting dockerd" >&2
  mkdir -p /var/log
  (setsid dockerd >/var/log/maas-dockerd.log 2>&1 &)
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "setup: dockerd did not start; see /var/log/maas-dockerd.log" >&2; exit 1; }
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# Installed once per pyproject.toml: run.sh calls this on every start, and an unchanged
# project needs no second install (nor the network).
stamp=".venv/.maas-setup-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -e "$stamp" ] || ! .venv/bin/python -c 'import maas.cli, maas.agent, maas.gateway, maas.host' 2>/dev/null; then
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
  rm -f .venv/.maas-setup-* && touch "$stamp"
fi
echo "setup: ready (.venv/bin/maasctl, .venv/bin/maas-agent)" >&2

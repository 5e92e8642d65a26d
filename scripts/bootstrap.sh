#!/usr/bin/env bash
# Sets up everything mcp-hangar's development, tests and benchmarks need, on a fresh machine.
# Idempotent: run it again whenever; it only installs what is missing.
#   .venv/          Python virtual environment with mcp-hangar (editable) and its dev extras,
#                   which include the real third-party providers mcp-server-time and mcp-server-git
#   .cache/node/    the npm provider @modelcontextprotocol/server-everything
#   podman, runc    the container engine the container-provider tests start (Debian packages, as root)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
EVERYTHING_VERSION=2026.8.31

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "bootstrap: node and npm are needed for the server-everything provider; installing them" >&2
  apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
fi
if [ ! -f .cache/node/node_modules/@modelcontextprotocol/server-everything/dist/index.js ]; then
  mkdir -p .cache/node
  npm install --silent --no-audit --no-fund --prefix .cache/node \
    "@modelcontextprotocol/server-everything@${EVERYTHING_VERSION}" >/dev/null
fi
if ! command -v podman >/dev/null || ! command -v runc >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "bootstrap: installing podman and runc for the container provider tests" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc >/dev/null
  else
    echo "bootstrap: podman and runc are missing; the container tests need them (apt-get install podman runc)" >&2
  fi
fi
echo "bootstrap: ready (.venv, .cache/node, podman)" >&2

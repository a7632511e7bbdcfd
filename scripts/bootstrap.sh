#!/usr/bin/env bash
# Installs what is missing for the Python side: uv (in .tools/) and the workspace venv (.venv/).
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=0.13.9
if [ ! -x .tools/bin/uv ]; then
  echo "==> installing uv $UV_VERSION into .tools/"
  python3 -m venv .tools
  .tools/bin/pip install -q "uv==$UV_VERSION"
fi
echo "==> syncing the workspace into .venv/"
UV_PYTHON_DOWNLOADS=never .tools/bin/uv sync -q --frozen 2>/dev/null || UV_PYTHON_DOWNLOADS=never .tools/bin/uv sync -q

#!/usr/bin/env bash
# Installs the peers the gateway benchmark compares against, into git-ignored places:
# LiteLLM's proxy in benchmarks/.venv-litellm (its dependency set would clash with the
# guard's, so it gets its own venv), and matplotlib for the plots (the `bench` extra).
# nginx-light and wrk come from Debian: apt-get install -y nginx-light wrk.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv-litellm"
if [ ! -x "$venv/bin/litellm" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet 'litellm[proxy]'
fi
"$venv/bin/python" -c 'import importlib.metadata as m; print("litellm", m.version("litellm"))'
python3 -c 'import matplotlib' 2>/dev/null || python3 -m pip install --quiet 'matplotlib>=3.8'
for tool in nginx wrk; do
    command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y nginx-light wrk" >&2; exit 1; }
done

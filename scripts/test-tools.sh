#!/usr/bin/env bash
# System packages some tests need, installed when this machine lets us (root + apt-get):
#   chromium    the track page opened in a real headless browser (tests/api, tests/web)
#   postgresql  a throw-away PostgreSQL server: the suite's second storage backend
#   curl        docs/api.md's curl examples, run as written (tests/api/test_docs_example.py)
# Elsewhere nothing is installed: those tests skip and say which package is missing.
set -euo pipefail

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
command -v curl >/dev/null 2>&1 || missing+=(curl)
[ ${#missing[@]} = 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "==> installing test tools (apt-get): ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "==> not installed: ${missing[*]} (sudo apt-get install ${missing[*]}); the tests that need them skip"
fi

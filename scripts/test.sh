#!/usr/bin/env bash
# Run ruff, mypy and the tests: ./scripts/test.sh [--all] [pytest args]
#
#   ./scripts/test.sh               ruff, mypy, then the fast tier (unit, core, generation with the
#                                   debug model; under two minutes)
#   ./scripts/test.sh --all         ruff, mypy, then both tiers (also when CI=true, as in .ci/run)
#   ./scripts/test.sh tests/e2e     the named tests, whatever their tier
#
# The slow tier (subprocess, fault-injection and end-to-end tests) is listed in
# tests/conftest.py. .venv is installed from requirements/lock.txt only when it does not match
# it already (scripts/setup.sh keeps a stamp), so a second run asks no package registry.
set -euo pipefail
cd "$(dirname "$0")/.."

all=0
case "${CI:-}" in true|1|yes) all=1 ;; esac
args=()
named=0  # pytest args that name tests (paths or node ids) or pick by marker
for arg in "$@"; do
  if [ "$arg" = --all ]; then all=1; continue; fi
  args+=("$arg")
  case "$arg" in
    -m|-m*) named=1 ;;
    -*) ;;
    *) [ -e "${arg%%::*}" ] && named=1 ;;
  esac
done

./scripts/setup.sh --deps-only
./scripts/test-tools.sh  # chromium and postgresql for the browser and second-backend tests
.venv/bin/python requirements/check_lock.py  # a dependency added without re-locking
.venv/bin/ruff check .
# Types: the whole tree; bot/core and the config with the --strict flags (set per module in
# pyproject.toml), the rest with the defaults. One run, so the cache stays warm.
.venv/bin/mypy bot generation
# Named tests run whatever their tier: asking for tests/e2e and getting "deselected" helps nobody.
tier=()
[ "$all" = 0 ] && [ "$named" = 0 ] && tier=(-m "not slow")
# The same storage-facing tests on PostgreSQL: tests/pg.py starts a throw-away cluster (Debian's
# postgresql 15, as the unprivileged user "nobody" when we are root) and gives every test a
# fresh database. Only for a whole-suite run, and only where the server binaries exist. It
# runs beside the SQLite pass (its output is printed after it): the two passes spend much of
# their time waiting on subprocesses and sockets, so on two cores they overlap well.
pg_pid=""
pg_log=""
if [ "$named" = 0 ] && [ -x "${MUSICBOT_PG_BIN:-/usr/lib/postgresql/15/bin}/initdb" ]; then
  pg_tests=(tests/core tests/storage tests/e2e)
  # issue #15 on PostgreSQL: 4 workers + 2 frontends, 200 jobs, kills (~70-80 s on 2 cores)
  [ "$all" = 1 ] && pg_tests+=(tests/process/test_scale.py)
  pg_log="$(mktemp)"
  echo "==> pytest on PostgreSQL (${pg_tests[*]}), in the background"
  # A hard limit on the whole pass (a test alone is limited by pytest-timeout): CI must end
  # with this pass's output, never wait on it.
  MUSICBOT_TEST_DB=postgres timeout -k 30 "${MUSICBOT_PG_PASS_LIMIT_S:-960}" \
    .venv/bin/python -m pytest -p no:cacheprovider "${tier[@]}" \
    "${pg_tests[@]}" >"$pg_log" 2>&1 &
  pg_pid=$!
fi
echo "==> pytest ($([ ${#tier[@]} = 0 ] && echo "all tiers" || echo "fast tier; --all for the slow tier too"))"
status=0
.venv/bin/python -m pytest "${tier[@]}" "${args[@]}" || status=$?
if [ -n "$pg_pid" ]; then
  pg_status=0
  wait "$pg_pid" || pg_status=$?
  [ "$pg_status" = 124 ] && echo "==> pytest on PostgreSQL: stopped after ${MUSICBOT_PG_PASS_LIMIT_S:-960} s"
  echo "==> pytest on PostgreSQL: output"
  cat "$pg_log"
  rm -f "$pg_log"
  [ "$status" = 0 ] && status=$pg_status
fi
exit "$status"

#!/usr/bin/env bash
# Install musicbot into ./.venv from the lock file and start it.
#
#   ./scripts/setup.sh                 install, then start the bot (`musicbot run`) when chat
#                                      tokens are set, else make a demo track in the console
#   ./scripts/setup.sh --install-only  install, write config.yaml, migrate the database, stop
#   ./scripts/setup.sh --deps-only     only the locked .venv (scripts/test.sh, the Dockerfile)
#
# The install is requirements/lock.txt, exact versions with hashes, then musicbot itself. When
# .venv already matches the lock (a stamp of the lock, pyproject.toml, this script, the Python
# version, the torch variant and this checkout's path), nothing is installed and no package
# registry is asked anything.
#
# Environment: PYTHON (default python3.11 or python3); MUSICBOT_TORCH=cuda (default: PyPI's
# torch, with its CUDA libraries; runs on CPU-only machines too) or cpu (PyTorch's CPU-only
# build, about 3 GB smaller); MUSICBOT_DEMO_MODEL (model for the demo track; default "debug",
# a random-initialised model whose output is noise).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=run
case "${1:-}" in
  --install-only) mode=install ;;
  --deps-only) mode=deps ;;
  "") ;;
  *) echo "usage: $0 [--install-only | --deps-only]" >&2; exit 2 ;;
esac

say() { printf '\n==> %s\n' "$*"; }

# --- ffmpeg (pydub encodes MP3s with it) -------------------------------------------------
if ! command -v ffmpeg >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    say "installing ffmpeg (apt-get)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null
  else
    echo "musicbot needs ffmpeg. Install it first, then run this again:" >&2
    echo "    sudo apt-get install -y ffmpeg      (macOS: brew install ffmpeg)" >&2
    exit 1
  fi
fi

# --- Python environment, from the lock -------------------------------------------------------
python=${PYTHON:-$(command -v python3.11 || command -v python3)}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "musicbot needs Python 3.11 or newer; $python is $("$python" --version 2>&1)." >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $("$python" --version)"
  "$python" -m venv .venv
fi

lock=requirements/lock.txt
variant=${MUSICBOT_TORCH:-cuda}
case "$variant" in cuda|cpu) ;; *) echo "MUSICBOT_TORCH must be cuda or cpu, not '$variant'" >&2; exit 2 ;; esac
stamp_file=.venv/musicbot-lock.stamp
# What the installed environment depends on; when none of it changed, there is nothing to do.
# (This script is in it too: a changed recipe reinstalls, which costs seconds when nothing moved.)
stamp=$( { sha256sum "$lock" pyproject.toml scripts/setup.sh; .venv/bin/python -VV; echo "$variant $PWD"; } | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp_file" 2>/dev/null)" = "$stamp" ]; then
  echo "==> .venv matches $lock: nothing to install"
else
  rm -f "$stamp_file"  # an install that stops half-way must not look complete
  pip=(.venv/bin/python -m pip --disable-pip-version-check -q)
  if [ "$variant" = cpu ]; then
    torch_version=$(sed -n 's/^torch==\([^ ]*\).*/\1/p' "$lock")
    say "installing torch $torch_version (CPU build, from PyTorch's index: not hash-checked)"
    "${pip[@]}" install --no-deps --index-url https://download.pytorch.org/whl/cpu "torch==$torch_version+cpu"
    # The rest of the lock without torch's CUDA stack (blocks start at column 0).
    awk '/^[^ #]/ { skip = ($0 ~ /^(torch|triton)==|^(nvidia|cuda)-/) } !skip' "$lock" > .venv/lock-cpu.txt
    lock=.venv/lock-cpu.txt
  fi
  say "installing the locked packages ($lock)"
  # --no-deps: the lock is the whole environment, and audiocraft 1.3.0's own pins (torch==2.1.0,
  # av==11, xformers<0.0.23) do not install beside a current torch (see README, Install notes).
  "${pip[@]}" install --no-deps --require-hashes -r "$lock"
  say "installing musicbot"
  # No build isolation: setuptools comes from the lock, not from a fresh download.
  "${pip[@]}" install --no-deps --no-build-isolation -e .
  echo "$stamp" > "$stamp_file"
fi
[ "$mode" = deps ] && exit 0

[ -f config.yaml ] || { cp config.example.yaml config.yaml; say "wrote config.yaml from config.example.yaml"; }
.venv/bin/musicbot db upgrade

[ "$mode" = install ] && exit 0

# --- Run -------------------------------------------------------------------------------------
if [ -n "${DISCORD_TOKEN:-}" ] || [ -n "${SLACK_BOT_TOKEN:-}" ] || grep -qsE '^(export )?(DISCORD_TOKEN|SLACK_BOT_TOKEN)=.' .env; then
  say "starting the bot (Ctrl+C stops it; running jobs go back to the queue)"
  exec .venv/bin/musicbot run
fi
model=${MUSICBOT_DEMO_MODEL:-debug}
say "no DISCORD_TOKEN or SLACK_BOT_TOKEN set: making a demo track through the console instead"
[ "$model" = debug ] && echo "    (model 'debug' has random weights: the demo track is NOISE; set MUSICBOT_DEMO_MODEL=small for real music)"
.venv/bin/musicbot console --model "$model" \
  -c '/music prompt:"lofi hip hop, rain, 80 bpm" duration:5' -c '/balance'
cat <<'MSG'

Installed. Set DISCORD_TOKEN and/or SLACK_BOT_TOKEN + SLACK_APP_TOKEN (see README) and run
    .venv/bin/musicbot run
MSG

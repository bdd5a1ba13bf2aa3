#!/usr/bin/env bash
# Install musicbot into ./.venv and start it.
#
#   ./scripts/setup.sh                 install, then start the bot (`musicbot run`) when chat
#                                      tokens are set, else make a demo track in the console
#   ./scripts/setup.sh --install-only  install and stop
#
# Environment: PYTHON (default python3.11 or python3), MUSICBOT_DEMO_MODEL (model for the
# demo track; default "debug", a random-initialised model whose output is noise).
set -euo pipefail
cd "$(dirname "$0")/.."

install_only=0
[ "${1:-}" = "--install-only" ] && install_only=1

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

# --- Python environment --------------------------------------------------------------------
python=${PYTHON:-$(command -v python3.11 || command -v python3)}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "musicbot needs Python 3.11 or newer; $python is $("$python" --version 2>&1)." >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $("$python" --version)"
  "$python" -m venv .venv
fi
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)
say "installing torch and what audiocraft needs (requirements/audiocraft-deps.txt)"
"${pip[@]}" install -r requirements/audiocraft-deps.txt
# audiocraft 1.3.0 pins torch==2.1.0, av==11 and xformers<0.0.23, none of which install
# beside a current torch on Python 3.11: install it without its pins (see README).
"${pip[@]}" install --no-deps "audiocraft==1.3.0"
say "installing musicbot"
"${pip[@]}" install -e ".[test]"
[ -f config.yaml ] || { cp config.example.yaml config.yaml; say "wrote config.yaml from config.example.yaml"; }
.venv/bin/musicbot db upgrade

[ "$install_only" = 1 ] && exit 0

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

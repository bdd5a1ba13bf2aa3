# musicbot image. Build (see docs/operations.md):
#
#   docker build -t musicbot:cpu .                          CPU only (PyTorch's CPU build)
#   docker build -t musicbot:cuda --build-arg TORCH=cuda .  NVIDIA GPUs (run with --gpus all)
#
# Both install with the same locked recipe as a host: scripts/setup.sh --deps-only, from
# requirements/lock.txt (exact versions, hash-checked). The CUDA variant needs no CUDA base
# image: PyPI's torch brings its CUDA libraries as wheels; the host's driver comes in through
# the NVIDIA container toolkit.
#
# Secrets (DISCORD_TOKEN, SLACK_BOT_TOKEN, SLACK_APP_TOKEN, SLACK_SIGNING_SECRET) come only
# from the environment at run time (docker run --env-file): never bake them into the image.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

# cpu or cuda: which torch build scripts/setup.sh installs (MUSICBOT_TORCH).
ARG TORCH=cpu

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MUSICBOT_TORCH=${TORCH}

# ffmpeg encodes the MP3s (pydub calls it). Not pinned to a Debian version on purpose: the
# archive drops superseded versions, so a pin breaks the build at the next security update.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Dependencies first, code after: a code change does not reinstall 2-5 GB of torch.
# The packages' __init__.py files are enough for the editable install to map bot/ and
# generation/; the rest of the code lands in the same folders below.
COPY pyproject.toml README.md ./
COPY requirements/ requirements/
COPY scripts/setup.sh scripts/setup.sh
COPY bot/__init__.py bot/__init__.py
COPY generation/__init__.py generation/__init__.py
RUN ./scripts/setup.sh --deps-only

COPY bot/ bot/
COPY generation/ generation/
COPY config.example.yaml ./

# Unprivileged user; it owns only the data volume (database, tracks, model cache, config).
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin musicbot \
 && mkdir -p /data \
 && chown musicbot:musicbot /data
USER 10001:10001
VOLUME ["/data"]
# musicbot keeps its database and tracks in the working directory and reads
# /data/config.yaml when present (else its built-in defaults); Hugging Face weights are
# cached in the volume too, so they download once.
WORKDIR /data
ENV HF_HOME=/data/huggingface \
    PATH=/app/.venv/bin:${PATH}

# SIGTERM (docker stop) is the polite stop: running jobs go back to the queue. Give it time:
# docker stop -t 60.
STOPSIGNAL SIGTERM
ENTRYPOINT ["musicbot"]
CMD ["run"]

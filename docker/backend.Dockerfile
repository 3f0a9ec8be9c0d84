# syntax=docker/dockerfile:1
# The ML backend: `lsal serve` (FastAPI) on port 9090, on the CPU. Build from the repository root:
#   docker build -f docker/backend.Dockerfile -t lsal/backend .
# (docker/compose.yaml does this with `context: ..`). No secret is baked in: every setting comes from the
# environment at run time (docker/.env.example lists them).
#
# PyTorch comes from PyTorch's CPU-only wheel index: the backend never trains, it answers /predict from the
# serving model, and the CPU wheels are a fraction of the size of the CUDA ones. The versions are those of
# .ci/setup; change them with --build-arg TORCH_VERSION=... TORCHVISION_VERSION=...
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# GLib for OpenCV (the headless wheel leaves it to the system); then an unprivileged user whose UID the
# worker image shares, so both can write the model volume.
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends libglib2.0-0; \
    rm -rf /var/lib/apt/lists/*; \
    groupadd --gid 10001 lsal; \
    useradd --uid 10001 --gid lsal --create-home --shell /usr/sbin/nologin lsal; \
    mkdir -p /data/models; \
    chown -R lsal:lsal /data

RUN pip install "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" --index-url "${TORCH_INDEX_URL}"

# Dependencies first (their layer survives source edits), held to the torch installed above; then the code.
WORKDIR /src
COPY pyproject.toml README.md ./
RUN set -eux; \
    pip list --format=freeze | grep -iE '^(torch|torchvision)==' > /tmp/constraints.txt; \
    python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt; \
    pip install -c /tmp/constraints.txt -r /tmp/requirements.txt
COPY backend ./backend
COPY core ./core
COPY cli ./cli
COPY stack ./stack
COPY plugins ./plugins
COPY worker ./worker
RUN set -eux; \
    pip install --no-deps .; \
    cd /; rm -rf /src /tmp/constraints.txt /tmp/requirements.txt; \
    python -c "import cv2, torch, backend.asgi, worker.jobs; print('torch', torch.__version__)"; \
    lsal serve --help > /dev/null; \
    python -m plugins.models.pretrained --dir /opt/lsal/cache/weights; \
    python -m plugins.minilm_files --dir /opt/lsal/cache/weights

WORKDIR /home/lsal
# /predict of a project with an encoder embeds the tasks the embedding cache lacks: the encoders' weights are
# in the cache's weights folder, fetched above
ENV MODEL_DIR=/data/models \
    LSAL_CACHE_DIR=/opt/lsal/cache
USER lsal

EXPOSE 9090
# /health is open (no auth) and answers without Redis or Label Studio: this checks the process serves HTTP.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9090/health', timeout=4).status == 200 else 1)"]

CMD ["lsal", "serve", "--host", "0.0.0.0", "--port", "9090"]

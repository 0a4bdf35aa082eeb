# syntax=docker/dockerfile:1
# portico's container image: build with Rust, run on slim Debian as a non-root
# user. `docker build -t portico .` from the repository root; see
# examples/kubernetes/README.md. A test (tests/integration/kubernetes.rs) keeps
# the build command, the user, the ports and the config path in step with the
# README and the Kubernetes manifests.

FROM rust:1.95-slim-trixie AS build
WORKDIR /src
COPY . .
# The registry and target caches survive between builds (BuildKit); the
# binary is copied out of the cached target dir in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin portico \
    && install -D target/release/portico /out/portico

FROM debian:trixie-slim
# A fixed numeric id, so Kubernetes' runAsNonRoot can check it and
# securityContext.runAsUser can name the same one.
RUN groupadd --system --gid 10001 portico \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin portico
COPY --from=build /out/portico /usr/local/bin/portico
USER 10001:10001
# 8080: [server] listen (clients, /healthz, /readyz); 9090: [telemetry.metrics] listen.
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/portico"]
CMD ["serve", "--config", "/etc/portico/portico.toml"]

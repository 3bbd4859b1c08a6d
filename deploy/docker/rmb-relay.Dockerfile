# syntax=docker/dockerfile:1
# rmb-relay image. Build from the repository root (the whole workspace is the context):
#   docker build -f deploy/docker/rmb-relay.Dockerfile -t rmb-relay .
# Run (settings as RMB_RELAY_* variables, or mount a config file and pass --config):
#   docker run -p 8081:8081 -e RMB_RELAY_DOMAINS=relay.example.org \
#     -e RMB_REGISTRAR=https://registrar.example.org rmb-relay

FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the crate registry and target dir between builds; the binary is
# copied out because the cached target dir is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p rmb-relay \
    && cp target/release/rmb-relay /usr/local/bin/

FROM debian:bookworm-slim
# CA certificates: federation with other relays and registrar lookups use https.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin rmb
COPY --from=build /usr/local/bin/rmb-relay /usr/local/bin/rmb-relay
USER rmb
# The relay's default listen address is 0.0.0.0:8081; put TLS in front (deploy/proxy).
EXPOSE 8081
ENTRYPOINT ["/usr/local/bin/rmb-relay"]

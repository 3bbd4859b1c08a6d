# syntax=docker/dockerfile:1
# rmb-peer image. Build from the repository root (the whole workspace is the context):
#   docker build -f deploy/docker/rmb-peer.Dockerfile -t rmb-peer .
# Run next to the applications' Redis; the secret comes from a file or variable, never a
# flag (it would show in `ps`):
#   docker run --env-file rmb-peer.env -e RMB_REDIS=redis://redis:6379 \
#     -e RMB_RELAY=wss://relay.example.org -e RMB_REGISTRAR=https://registrar.example.org rmb-peer

FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the crate registry and target dir between builds; the binary is
# copied out because the cached target dir is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p rmb-peer \
    && cp target/release/rmb-peer /usr/local/bin/

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin rmb
COPY --from=build /usr/local/bin/rmb-peer /usr/local/bin/rmb-peer
USER rmb
# No EXPOSE: rmb-peer listens on nothing. It connects out to Redis, relays and the
# registrar; applications talk to it through Redis lists.
ENTRYPOINT ["/usr/local/bin/rmb-peer"]

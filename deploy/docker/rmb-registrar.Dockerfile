# syntax=docker/dockerfile:1
# rmb-registrar image. Build from the repository root (the whole workspace is the context):
#   docker build -f deploy/docker/rmb-registrar.Dockerfile -t rmb-registrar .
# Run with SQLite on a volume (or -e RMB_REGISTRAR_DB=postgres://... for PostgreSQL):
#   docker run -p 8080:8080 -v rmb-registrar:/var/lib/rmb-registrar rmb-registrar

FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the crate registry and target dir between builds; the binary is
# copied out because the cached target dir is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p rmb-registrar \
    && cp target/release/rmb-registrar /usr/local/bin/

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin rmb \
    && mkdir -p /var/lib/rmb-registrar \
    && chown rmb:rmb /var/lib/rmb-registrar
COPY --from=build /usr/local/bin/rmb-registrar /usr/local/bin/rmb-registrar
USER rmb
# Variables rather than flags, so `docker run -e` can replace them (flags would win).
# The registrar's own default is 127.0.0.1, unreachable from outside a container.
ENV RMB_REGISTRAR_LISTEN=0.0.0.0:8080 \
    RMB_REGISTRAR_DB=/var/lib/rmb-registrar/registrar.db
VOLUME /var/lib/rmb-registrar
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/rmb-registrar"]

# syntax=docker/dockerfile:1
# One image for the binaries (`api`, `worker`, and the `jobs` admin CLI);
# docker-compose.yml picks one with `command:`. Multi-stage so the runtime image carries no toolchain.

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target dir between builds; the binaries
# are copied out because a cache mount is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin api --bin worker --bin jobs \
    && mkdir -p /out \
    && cp target/release/api target/release/worker target/release/jobs /out/

FROM debian:bookworm-slim
# ca-certificates for SMTP over TLS; curl for the compose healthcheck.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --no-create-home app
COPY --from=builder /out/api /out/worker /out/jobs /usr/local/bin/
USER app
EXPOSE 8080
CMD ["api"]

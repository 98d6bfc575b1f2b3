# syntax=docker/dockerfile:1
# Tidings: one image holding the three binaries (tidings, callbacks-spreader, callback-deliver).
#   docker build -t tidings:0.1.0 .
# The image has no ENTRYPOINT, so each Deployment picks its binary with `command:`; the default runs the API.

FROM rust:1-bookworm AS builder
WORKDIR /build

# Dependencies first, against stub sources: this layer is rebuilt only when Cargo.toml or Cargo.lock changes.
# Cargo.toml names a test target, so it gets a stub too; `cargo clean --package tidings` then drops the stub
# artifacts, so the real sources below are always compiled whatever their timestamps.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src processors tests/api \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && echo 'fn main() {}' > processors/callbacks_spreader.rs \
 && echo 'fn main() {}' > processors/callback_deliver.rs \
 && echo 'fn main() {}' > tests/api/main.rs \
 && cargo build --release --locked --bins \
 && cargo clean --release --package tidings \
 && rm -rf src processors

# Then Tidings itself (migrations are embedded in the binaries at compile time).
COPY src src
COPY processors processors
COPY migrations migrations
RUN cargo build --release --locked --bins \
 && mkdir -p /out \
 && cp target/release/tidings target/release/callbacks-spreader target/release/callback-deliver /out/

FROM debian:bookworm-slim AS runtime
# CA certificates for HTTPS callbacks, topic fetches and TLS to PostgreSQL; nothing else. Unpinned on purpose:
# the newest bookworm certificates are the right ones.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 tidings \
 && useradd --uid 10001 --gid tidings --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin tidings
COPY --from=builder /out/ /usr/local/bin/
USER 10001:10001
# 8080: the API (and its /healthz, /readyz, /metrics); 9090: the processors' /healthz, /readyz, /metrics.
EXPOSE 8080 9090
STOPSIGNAL SIGTERM
CMD ["tidings", "serve"]

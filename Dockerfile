# Multi-stage build of assistants-proxy: a release binary on a small Debian runtime,
# running as a non-root user on port 8080 with its SQLite database under /data.
#
#   docker build -t assistants-proxy .
#   docker run -p 8080:8080 -v ap-data:/data assistants-proxy

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first (their download is the slow, rarely changing part).
COPY Cargo.toml Cargo.lock ./
COPY . .
RUN cargo fetch --locked
RUN cargo build --release --locked --bin assistants-proxy \
    && strip target/release/assistants-proxy

FROM debian:bookworm-slim AS runtime
# ca-certificates: for `upstream.native_roots = true` (webpki roots are built in).
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data --create-home proxy
COPY --from=build /src/target/release/assistants-proxy /usr/local/bin/assistants-proxy
COPY config/assistants-proxy.toml /etc/assistants-proxy/assistants-proxy.toml
USER proxy
WORKDIR /data
ENV ASSISTANTS_PROXY_LISTEN=0.0.0.0:8080 \
    ASSISTANTS_PROXY_STORE=sqlite:///data/assistants.db \
    ASSISTANTS_PROXY_LOG_FORMAT=json
EXPOSE 8080
VOLUME ["/data"]
ENTRYPOINT ["assistants-proxy"]
CMD ["serve"]

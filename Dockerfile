# Multi-stage build of assistants-proxy: a release binary on a small Debian runtime,
# running as a non-root user on port 8080 with its SQLite database under /data, with
# code_interpreter's local executor (bubblewrap and a Python with numpy, pandas, matplotlib).
#
#   docker build -t assistants-proxy .
#   docker run -p 8080:8080 -v ap-data:/data assistants-proxy
#
# The sandbox needs user namespaces, which Docker's default seccomp profile refuses: run with
# `--security-opt seccomp=unconfined` (or a profile allowing unshare/clone of namespaces) for
# code_interpreter, or use the jupyter executor. Without them the proxy says so at start-up
# and code_interpreter calls answer that error; code never runs unsandboxed.

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
# bubblewrap, python3, python3-venv: code_interpreter's sandbox and its Python environment.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
        bubblewrap python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data --create-home proxy
COPY scripts/interpreter-env.sh /tmp/interpreter-env.sh
RUN /tmp/interpreter-env.sh /opt/assistants-proxy/python && rm /tmp/interpreter-env.sh
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

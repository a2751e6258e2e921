# syntax=docker/dockerfile:1
# jit broker image: `jit-server` (and the `jit` client: `jit` and `jit-client`) on Debian
# bookworm-slim, as uid 10001.
#
#   docker build -t jit .
#   docker run --rm -p 8080:8080 -v "$PWD/jit.toml:/etc/jit/jit.toml:ro" \
#       -e JIT_SESSION_KEY -e JIT_OIDC_CLIENT_SECRET -e JIT_ENTRA_CLIENT_SECRET jit
#
# docs/deploy.md has the full story (configuration, secrets, PostgreSQL, replicas).

############################ build ############################
FROM rust:1-bookworm AS builder
WORKDIR /build

# 1. Dependencies only. The manifests and placeholder sources below change rarely,
#    so this layer — by far the slowest — is reused until Cargo.toml/Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
COPY src/api/Cargo.toml src/api/Cargo.toml
COPY src/cli/Cargo.toml src/cli/Cargo.toml
COPY src/cli-base/Cargo.toml src/cli-base/Cargo.toml
COPY src/server/Cargo.toml src/server/askama.toml src/server/
# (The test and bench targets named in src/server/Cargo.toml need no files for a build.)
RUN mkdir -p src/api/src src/cli/src src/cli-base/src src/server/src \
    && touch src/api/src/lib.rs src/cli/src/lib.rs src/cli-base/src/lib.rs src/server/src/lib.rs \
    && echo 'fn main() {}' > src/cli/src/main.rs \
    && echo 'fn main() {}' > src/cli/src/client.rs \
    && echo 'fn main() {}' > src/server/src/main.rs \
    && cargo build --release --locked -p jit-server -p jit \
    && rm -rf src

# 2. The real sources. Migrations, policies, templates and assets are compiled in
#    (include_str!, askama), so they are needed here.
COPY src src
COPY migrations migrations
COPY policies policies
COPY templates templates
# COPY keeps the files' own times, which may be older than the placeholder build:
# touch them so cargo rebuilds the project's crates (and only those).
RUN find src -name '*.rs' -exec touch {} + \
    && cargo build --release --locked -p jit-server -p jit \
    && install -D -m 0755 target/release/jit-server /out/jit-server \
    && install -D -m 0755 target/release/jit /out/jit \
    && install -D -m 0755 target/release/jit-client /out/jit-client

############################ runtime ############################
FROM debian:bookworm-slim

# ca-certificates: TLS to the IdP, AWS, Microsoft Graph, SMTP and PostgreSQL.
# Nothing else: the health check below uses bash (in the base image), not curl.
# Not pinned on purpose: CA certificates should be the newest the release has.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 jit \
    && useradd --system --uid 10001 --gid jit --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin jit \
    && mkdir -p /app /etc/jit /var/lib/jit \
    && chown jit:jit /var/lib/jit

# `jit` runs `jit-client` from its own directory for everything but a cached
# `credential-process` answer: they are installed together.
COPY --from=builder /out/jit-server /out/jit /out/jit-client /usr/local/bin/
# The policy directory is read at start-up (`policy.dir`); mount your own over it.
COPY policies /app/policies
# Templates are compiled into the binary; this copy is for reference when customising.
COPY templates /app/templates
# Defaults for a container; mount your own file over it (docs/deploy.md).
COPY <<'EOF' /etc/jit/jit.toml
# Container defaults. Mount your configuration over /etc/jit/jit.toml, or set
# every key as JIT_SECTION__KEY (e.g. JIT_OIDC__ISSUER). See docs/deploy.md.
[server]
bind = "0.0.0.0:8080"

[database]
url = "sqlite:///var/lib/jit/jit.db"

[policy]
dir = "/app/policies"
EOF

WORKDIR /app
USER 10001:10001
VOLUME ["/var/lib/jit"]
EXPOSE 8080
ENV JIT_SERVER__BIND=0.0.0.0:8080 \
    JIT_CONFIG=/etc/jit/jit.toml

# GET /healthz over bash's /dev/tcp: no curl or wget in the image. The port is
# taken from JIT_SERVER__BIND; the check passes only on an HTTP 200 status line.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${JIT_SERVER__BIND##*:} && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]

ENTRYPOINT ["jit-server"]
CMD ["serve", "--config", "/etc/jit/jit.toml"]

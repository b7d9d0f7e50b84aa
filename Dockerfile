# syntax=docker/dockerfile:1
#
# whisperer-injector image: webhook + reconciler + DNS proxy in one static-ish binary.
#   docker build -t ghcr.io/whisperer-dev/whisperer-injector:v0.1.0 .
# The binary links glibc only (TLS is rustls + ring: no OpenSSL), so distroless/cc fits.

FROM rust:1-bookworm AS builder
WORKDIR /src
# The whole workspace (root crate + certs-gen); .dockerignore keeps target/, .git and
# generated keys out of the context.
COPY . .
# Cache mounts keep the registry, git checkouts and build artefacts between builds; the
# binary is copied out of the cached target dir, which is not part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p whisperer-injector \
    && install -D -m 0755 target/release/whisperer-injector /out/whisperer-injector

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="whisperer-injector" \
      org.opencontainers.image.description="Mutating admission webhook and ephemeral-container reconciler that attach the Whisperer capture agent to Kubernetes pods" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/whisperer-dev/whisperer-injector"
COPY --from=builder /out/whisperer-injector /whisperer-injector
# nonroot in distroless is 65532:65532; say it numerically so runAsNonRoot can check it.
USER 65532:65532
# 8443: webhook HTTPS (+ /healthz, /readyz); 5353: DNS proxy.
EXPOSE 8443 5353/udp 5353/tcp
ENTRYPOINT ["/whisperer-injector"]
CMD ["serve"]

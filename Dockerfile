# syntax=docker/dockerfile:1
#
# klaxon's container image.
#
#   docker build -t klaxon:0.1.0 .
#   docker run --rm --read-only -p 8080:8080 -v klaxon-outbox:/var/lib/klaxon klaxon:0.1.0
#
# Runtime: distroless "cc" (glibc, libgcc, CA certificates, /etc/passwd with user
# nonroot = 65532; no shell, no package manager). klaxon links glibc and libgcc only: TLS
# is rustls, no OpenSSL. The image runs as nonroot and never writes outside
# /var/lib/klaxon (the outbox), so it works with a read-only root filesystem; mount a
# volume there or every admitted alert still waiting for delivery is lost with the
# container.
#
# Layout (WORKDIR /etc/klaxon, so the default config lookup finds config/klaxon.toml):
#   /usr/local/bin/klaxon               the binary (ENTRYPOINT)
#   /etc/klaxon/config/klaxon.toml      config/klaxon.toml, listening on 0.0.0.0:8080 with
#                                       the outbox in /var/lib/klaxon
#   /etc/klaxon/scripts/                the shipped rules (scripts/*.rhai)
#   /usr/share/klaxon/rules/falco/      Falco's audit rules in Rhai (add with --scripts)
#   /var/lib/klaxon/                    the outbox (outbox.redb): mount a volume here
#
# Kubernetes mounts ConfigMaps over /etc/klaxon/config and /etc/klaxon/scripts
# (examples/kubernetes/). The base images are pinned by tag; pin them by digest too
# (FROM image:tag@sha256:...) where builds must be reproducible.

ARG RUST_VERSION=1.95.0

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# The registry and target caches survive between builds (BuildKit); the binary is copied
# out of the cached target directory, which is not part of the image layer. Only the
# daemon is built: the benchmark tooling (crates/klaxon-bench) stays out of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --package klaxon --bin klaxon \
    && install -D -m 0755 target/release/klaxon /out/usr/local/bin/klaxon
# The image's config: the repository's, with the two settings a container needs. The
# greps make the build fail if config/klaxon.toml changed so that the edits no longer apply.
RUN mkdir -p /out/etc/klaxon/config /out/usr/share/klaxon/rules /out/var/lib/klaxon \
    && sed -e 's|^listen = "127.0.0.1:8080"|listen = "0.0.0.0:8080"|' \
           -e 's|^path = "data"|path = "/var/lib/klaxon"|' \
           config/klaxon.toml > /out/etc/klaxon/config/klaxon.toml \
    && grep -qx 'listen = "0.0.0.0:8080"' /out/etc/klaxon/config/klaxon.toml \
    && grep -qx 'path = "/var/lib/klaxon"' /out/etc/klaxon/config/klaxon.toml \
    && cp -R scripts /out/etc/klaxon/scripts \
    && cp -R examples/rules/falco /out/usr/share/klaxon/rules/falco \
    && /out/usr/local/bin/klaxon --config /out/etc/klaxon/config/klaxon.toml \
           --scripts /out/etc/klaxon/scripts check

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/usr/local/bin/klaxon /usr/local/bin/klaxon
COPY --from=build /out/etc/klaxon /etc/klaxon
COPY --from=build /out/usr/share/klaxon /usr/share/klaxon
COPY --from=build --chown=65532:65532 /out/var/lib/klaxon /var/lib/klaxon
WORKDIR /etc/klaxon
# Numeric, so that the kubelet can check runAsNonRoot (it cannot resolve "nonroot").
USER 65532:65532
EXPOSE 8080
VOLUME ["/var/lib/klaxon"]
ENTRYPOINT ["/usr/local/bin/klaxon"]
CMD ["serve"]

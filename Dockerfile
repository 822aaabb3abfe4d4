# syntax=docker/dockerfile:1
# Build stage: release binary. aws-lc-rs (TLS) needs cmake, clang-free cc and perl.
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin canaryd

# Runtime stage: glibc + CA certificates, no shell, non-root (uid 65532).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/canaryd /usr/local/bin/canaryd
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/canaryd"]
CMD ["run", "--policies", "/etc/canaryd/policies"]

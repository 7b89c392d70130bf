# syntax=docker/dockerfile:1
#
# The bridge as a small, static, non-root image:
#   docker build -t evershield/bridge --build-arg VERSION=$(git describe --always) .
#   docker run --rm evershield/bridge version
# The same image runs every role (bridge run), the operator commands (bridge status, replay, deadletter, ...)
# and the upstream simulator (bridge simulate) used by docker-compose.yml.

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-alpine AS build
WORKDIR /src
# Dependencies first, so code changes do not refetch them.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=""
ARG TARGETOS
ARG TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/bridge ./cmd/bridge \
 && mkdir -p /out/data

# distroless/static: CA certificates, tzdata and /etc/passwd, no shell; nonroot is uid 65532.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/bridge /usr/local/bin/bridge
# The embedded nats-server's store when BRIDGE_NATS_URL is empty; mount a volume here to keep it.
COPY --from=build --chown=65532:65532 /out/data /data
ENV BRIDGE_DATA_DIR=/data
USER 65532:65532
# 8080: webhooks, /healthz, /readyz, /metrics. 4222: the embedded nats-server (to reach it, set
# BRIDGE_NATS_LISTEN=0.0.0.0:4222 and give it users with BRIDGE_NATS_CONFIG: docs/SECURITY.md).
EXPOSE 8080 4222
VOLUME ["/data"]
# Healthy while /readyz answers 200 (NATS and JetStream usable). distroless has no shell or curl, so the
# binary asks itself: bridge healthcheck reads BRIDGE_ADMIN_ADDR or BRIDGE_HTTP_ADDR (default :8080).
# Containers running another command of the image (simulate, status) should disable it.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["/usr/local/bin/bridge", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/bridge"]
CMD ["run"]

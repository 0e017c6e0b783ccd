# syntax=docker/dockerfile:1
# Multi-stage build: a static binary in a distroless, non-root image.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
    -o /out/keda-otel-scaler ./cmd/keda-otel-scaler

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/keda-otel-scaler /keda-otel-scaler
USER 65532:65532
# 4317 OTLP/gRPC, 4318 KEDA external scaler, 8080 HTTP (OTLP/HTTP, query API, /metrics, health)
EXPOSE 4317 4318 8080
ENTRYPOINT ["/keda-otel-scaler"]

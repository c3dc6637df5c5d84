# Calyx's image for those who build with a container engine:
#
#   docker build --build-arg VERSION=$(cat VERSION) \
#     --build-arg COMMIT=$(git rev-parse --short=12 HEAD) -t ghcr.io/calyx-net/calyx:$(cat VERSION) .
#
# `make image` builds the same image offline, without an engine or a registry
# (internal/ociimage): the same files, entrypoint, user and labels.

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION}-bookworm AS build
# The agent runs iptables (nf_tables and legacy) and ipset: Debian 12's,
# copied with their libraries into the final image by mkimage --rootfs.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iptables ipset netbase \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
# Static binaries (no libc of the build stage leaks into the image),
# without debug information, as make image builds them.
RUN CGO_ENABLED=0 go build \
      -ldflags "-s -w -X github.com/calyx-net/calyx/internal/version.Version=${VERSION} -X github.com/calyx-net/calyx/internal/version.Commit=${COMMIT}" \
      -o /out/bin/ ./cmd/calyx-agent ./cmd/calyx ./cmd/calyxctl ./cmd/calyx-kube-controllers \
 && go run ./internal/ociimage/mkimage --bin /out/bin --rootfs /out/rootfs

FROM scratch
COPY --from=build /out/rootfs/ /
ARG VERSION=dev
ARG COMMIT=unknown
LABEL org.opencontainers.image.title="calyx" \
      org.opencontainers.image.description="Calyx: pure-L3 container networking — calyx-agent, the calyx CNI plugin, calyxctl and calyx-kube-controllers" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}" \
      org.opencontainers.image.source="https://github.com/calyx-net/calyx" \
      org.opencontainers.image.url="https://github.com/calyx-net/calyx" \
      org.opencontainers.image.documentation="https://github.com/calyx-net/calyx/blob/main/docs/operations.md"
ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin
WORKDIR /
# calyxctl needs no privileges. The agent and install-cni need root
# (NET_ADMIN and SYS_ADMIN: netlink, iptables, workload namespaces; the
# host's CNI directories): the manifests ask for it (runAsUser: 0).
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/calyx-agent"]

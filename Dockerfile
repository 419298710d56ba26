# One image for kube-nbd: the operator, the NBD servers it starts, and the CSI node plugin.
#   docker build -t ghcr.io/kube-nbd/kube-nbd:0.1.0 .
# Stage 1 builds with the same Maven command as the README and CI; stage 2 is a Java 25 runtime
# with the tools the CSI plugin runs (losetup, blkid, mkfs, mount, FUSE 3).

FROM maven:3.9-eclipse-temurin-25 AS build
WORKDIR /src
COPY pom.xml ./
COPY nbd-node nbd-node
COPY operator operator
COPY crds crds
RUN mvn -B -ntp -DskipTests package

FROM eclipse-temurin:25-jre
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="kube-nbd" \
      org.opencontainers.image.description="Kubernetes persistent volumes over NBD: operator, NBD server, CSI node plugin" \
      org.opencontainers.image.source="https://github.com/kube-nbd/kube-nbd" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
RUN apt-get update \
 && apt-get install -y --no-install-recommends fuse3 libfuse3-3 util-linux mount e2fsprogs xfsprogs \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 65532 kube-nbd \
 && useradd --system --uid 65532 --gid 65532 --home-dir /nonexistent --shell /usr/sbin/nologin kube-nbd
COPY --from=build /src/nbd-node/target/nbd-node.jar /src/operator/target/kube-nbd-operator.jar /opt/kube-nbd/lib/
COPY docker/nbd-node docker/kube-nbd-operator /opt/kube-nbd/bin/
ENV PATH="/opt/kube-nbd/bin:${PATH}"
# The operator and the servers run as this user; the chart runs the CSI plugin privileged as root.
USER 65532:65532
# No HEALTHCHECK: Kubernetes probes the operator (/healthz, /readyz) and the plugin (livenessprobe sidecar).
ENTRYPOINT ["/opt/kube-nbd/bin/kube-nbd-operator"]

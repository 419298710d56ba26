# syntax=docker/dockerfile:1
# One image for kube-nbd: the operator, the NBD servers it starts, and the CSI node plugin.
#   docker build -t ghcr.io/kube-nbd/kube-nbd:0.1.0 .
# Stage 1 builds with the same Maven command as the README and CI; stage 2 is a Java 25 runtime
# with the tools the CSI plugin runs (losetup, blkid, mkfs, mount, FUSE 3).
# linux/amd64 only: the build uses x86_64 natives (protoc, netty's epoll, jfuse-linux-amd64) and
# `nbd-node csi` loads libfuse3 from Ubuntu's amd64 path. On an arm64 machine build with
# `docker build --platform linux/amd64 ...` (for amd64 nodes).

FROM maven:3.9-eclipse-temurin-25 AS build
RUN test "$(uname -m)" = x86_64 \
 || { echo "kube-nbd builds for linux/amd64 only: docker build --platform linux/amd64 ..." >&2; exit 1; }
WORKDIR /src
# Maven itself (not kube-nbd) uses sun.misc.Unsafe and warns about it on Java 25; as scripts/java-home.sh does.
ENV MAVEN_OPTS="--sun-misc-unsafe-memory-access=allow"
COPY pom.xml ./
COPY nbd-node nbd-node
COPY operator operator
COPY crds crds
# The cache mount keeps ~/.m2 between builds; the image gets only the jars.
RUN --mount=type=cache,target=/root/.m2 mvn -B -ntp -DskipTests package

# Ubuntu 24.04 (noble) pinned, not the moving 25-jre: nbd-node's default --fuse-library is
# /lib/x86_64-linux-gnu/libfuse3.so.3 from its libfuse3-3 (later releases ship libfuse3.so.4).
FROM eclipse-temurin:25-jre-noble
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="kube-nbd" \
      org.opencontainers.image.description="Kubernetes persistent volumes over NBD: operator, NBD server, CSI node plugin" \
      org.opencontainers.image.source="https://github.com/kube-nbd/kube-nbd" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
# The CSI plugin's tools: losetup, blkid (util-linux), mount/umount (mount), mkfs.ext4 and resize2fs
# (e2fsprogs), mkfs.xfs and xfs_growfs (xfsprogs), libfuse3 and fusermount3 (fuse3). The build fails
# here if a base image update ever drops one of them or moves libfuse3.
RUN apt-get update \
 && apt-get install -y --no-install-recommends fuse3 libfuse3-3 util-linux mount e2fsprogs xfsprogs \
 && rm -rf /var/lib/apt/lists/* \
 && for tool in losetup blkid mount umount mkfs.ext4 mkfs.xfs resize2fs xfs_growfs stat; do \
      command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }; done \
 && test -e /lib/x86_64-linux-gnu/libfuse3.so.3 \
 && groupadd --system --gid 65532 kube-nbd \
 && useradd --system --uid 65532 --gid 65532 --home-dir /nonexistent --shell /usr/sbin/nologin kube-nbd
COPY --from=build /src/nbd-node/target/nbd-node.jar /src/operator/target/kube-nbd-operator.jar /opt/kube-nbd/lib/
COPY docker/nbd-node docker/kube-nbd-operator /opt/kube-nbd/bin/
ENV PATH="/opt/kube-nbd/bin:${PATH}"
# The operator and the servers run as this user. Whatever needs root says so in its pod spec: the
# chart runs the CSI plugin privileged with runAsUser 0, and a server that opens a root-owned block
# device needs runAsUser 0 from the operator (not inherited from here).
USER 65532:65532
# No HEALTHCHECK: Docker's is ignored by Kubernetes, which probes the operator (/healthz, /readyz),
# the servers (their control port) and the plugin (the livenessprobe sidecar) itself.
ENTRYPOINT ["/opt/kube-nbd/bin/kube-nbd-operator"]

# Tollgate as a container: a static binary on an empty base, run as a
# non-root user. docker build -t tollgate . (compose.yaml builds it too).
# .ci/container builds the runtime stage with podman from .ci/rootfs's output
# and runs its binary in a chroot (docs/operating.md, "The container").

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN .ci/rootfs /out

FROM scratch AS runtime
COPY --from=build /out/rootfs/ /
# The working directory, where the default SQLite file (countries.db) goes:
# the user's own. With DB_DRIVER=mysql nothing is written there.
COPY --from=build --chown=10001:10001 /out/data/ /data/
WORKDIR /data
USER 10001:10001
EXPOSE 8080
# A scratch image has no curl: the binary asks its own /healthz.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 CMD ["/tollgate", "healthcheck"]
ENTRYPOINT ["/tollgate"]

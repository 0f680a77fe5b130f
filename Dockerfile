# One image for the node agent (`netdiag agent`, DaemonSet), the collector (`netdiag collector`)
# and the one-shot check (`netdiag check --host-root /host` in a node debug pod).
#
#   docker build -t REGISTRY/kube-netdiag:0.1.0 .
#
# Debian bookworm: its iptables 1.8.9 ships both backends (iptables-nft-save and
# iptables-legacy-save), which the iptables check compares (iptables.mixed-backends).
FROM python:3.11-slim-bookworm

# The node tools the checks run (read-only: -save / -L / -S): iptables (nft + legacy),
# ipvsadm, conntrack, iproute2 (ip, bridge). Versions come from the pinned Debian release;
# pinning each package's exact version breaks the build at every Debian security update.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends iptables ipvsadm conntrack iproute2 \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY agent ./agent
COPY collector ./collector
RUN pip install --no-cache-dir . \
    && rm -rf /src

# Non-root by default (the collector runs as is). The agent DaemonSet and the debug pod set
# runAsUser 0 and add only NET_ADMIN and NET_RAW: capabilities are not effective for a
# non-root user, and iptables-save, ipvsadm and netlink dumps need them.
RUN groupadd --system --gid 10001 netdiag \
    && useradd --system --uid 10001 --gid netdiag --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin netdiag
USER 10001:10001
WORKDIR /

# 8080: collector HTTP. 9476: agent HTTP (/healthz, /metrics, tcp-control) and UDP echo.
EXPOSE 8080 9476/tcp 9476/udp
ENTRYPOINT ["netdiag"]
CMD ["--help"]

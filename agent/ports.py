"""Well-known ports, in one place so CLI defaults, probes, manifests and tests agree."""

VXLAN_PORT_LINUX = 8472   # flannel, Cilium: the Linux kernel's historical default
VXLAN_PORT_IANA = 4789    # Calico VXLAN, RFC 7348
#: The agent's own port. TCP: /healthz and /metrics, and the target of the tcp-control probe.
#: UDP: the udp-control probe's echo responder. Both on the node's underlay address.
AGENT_PORT = 9476
COLLECTOR_PORT = 8080
KUBE_PROXY_HEALTHZ_PORT = 10256
KUBE_PROXY_METRICS_PORT = 10249

"""The namespace lab: a small "cluster" of network namespaces on this machine."""

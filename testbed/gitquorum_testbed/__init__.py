"""A real Kubernetes control plane on one machine, with simulated nodes.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler are the real binaries, built
from the Go module proxy. Nodes are simulated by a node agent that registers a Node, renews
its Lease, and runs each pod bound to it as local processes inside a network namespace of its
own, so Services, readiness and partitions behave as on a real cluster.
"""

"""The Kubernetes operator: GitRepository objects become replicas on pods and volumes.

``spec`` reads a GitRepository, ``manifests`` builds the objects it owns, ``planning`` decides
(pure functions), ``reconciler`` observes and acts, ``handlers`` wires it to kopf, ``lease``
keeps a single acting operator, ``metrics`` exposes what it does.
"""

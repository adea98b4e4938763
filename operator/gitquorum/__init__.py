"""gitquorum: replicated git repositories on Kubernetes.

The package is laid out by role: ``protocol`` holds the git wire formats (pkt-line framing,
receive-pack commands, status reports) with no I/O, ``server`` is the smart-HTTP git server
that every replica runs and that ``gitquorum serve`` runs standalone, and ``commands`` holds
the command-line entry points that ``cli`` dispatches to.
"""

__version__ = "0.1.0"

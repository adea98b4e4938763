"""``kubectl gitquorum``: a kubectl plugin that shows a repository's state at a glance.

``gathering`` reads the GitRepository, its replica pods, their nodes' zones and its recent
Events from the API server as kubectl would (kubeconfig, context, namespace); ``summary``
turns what was read into one typed value (pure); ``rendering`` prints it as tables a person
reads at a glance, or as JSON; ``cli`` is the ``kubectl-gitquorum`` entry point, which
kubectl runs for ``kubectl gitquorum ...`` when it is on the PATH.
"""

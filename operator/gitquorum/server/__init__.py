"""The git smart-HTTP server: what ``gitquorum serve`` runs and every replica builds on.

``http`` is the only module that knows the web framework; it turns requests into calls on
``services`` (running git for clients), ``auth`` and ``access`` (who may do what),
``repositories`` (which directory a URL names) and ``writepath`` (how a push is carried out,
the seam replication plugs into). ``spawning`` runs git processes under the concurrency
limit, ``bodies`` decodes request bodies, ``metrics`` counts.
"""

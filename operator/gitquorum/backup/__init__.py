"""Backups of a repository to S3-compatible object storage as git bundles, and restores.

The library only: the object-store layout (``layout``), the manifests that describe each
backup (``manifests``), which backups a restore needs and which the next backup builds on
(``catalog``), which ones a retention policy keeps (``retention``), when the next one is due
(``schedule``), the store itself (``objectstore``), and git's side of making and restoring
bundles (``bundling``, ``restoring``). The replica's admin endpoints and the operator drive it.
No module here imports kopf, kubernetes or the web framework.
"""

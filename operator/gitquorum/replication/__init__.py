"""Quorum replication of one repository across its replicas (``gitquorum replica``)."""

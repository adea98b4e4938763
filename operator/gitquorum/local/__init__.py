"""The local controller: replicas as processes on loopback, for tests and demos."""

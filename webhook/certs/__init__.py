"""Certificates: generating them, the pure rotation state machine, the in-cluster sync (Secret, Lease,
caBundle) and the serving TLS context that reloads a renewed pair without a restart."""

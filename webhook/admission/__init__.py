"""The admission adapters around the core: the AdmissionReview codec, the handler, the HTTP app, the
RayCluster lookup (a manifest folder or the watch-fed cache) and the Prometheus metrics."""

"""ray-ft-webhook: inject Ray GCS fault-tolerance settings into KubeRay pods at admission."""

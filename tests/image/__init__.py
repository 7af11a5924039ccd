"""Image tier: the container image built with podman and run as the Deployment runs it (pytest -m image)."""

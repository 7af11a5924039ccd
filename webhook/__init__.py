"""ray-ft-webhook: inject Ray GCS fault-tolerance settings into KubeRay pods at admission.

Layers, lowest first (hack/check_layers.py enforces them; a module imports only its own layer and lower):
`core` (the pure decision) < `common` (errors, files, API client, logs) < `admission` | `certs` (peers) <
`cli` (the command line).
"""

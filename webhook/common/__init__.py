"""What every adapter shares: `InputError`, reading manifest files, the Kubernetes API client, JSON logs."""

"""Real-Ray tier: the webhook's rendered configuration run on real Ray and real Redis (pytest -m realray).

The webhook's claim is "these env vars and this `ray start` line give GCS fault tolerance". The only proof is
to run exactly that configuration: the tier takes the Ray container of a rendered pod (its `env` and its
`args[0]` bash line), keeps the env verbatim, and changes only what differs between a pod network and one
machine: node IP, ports and the addresses that point at them. Everything else (storage namespace, Redis
password from a Secret, reconnect timeouts, the `--redis-password=$REDIS_PASSWORD` flag expanded by bash)
reaches Ray exactly as Kubernetes would deliver it. Every process is started in its own session and
stopped by its PID (testkit.processes).

Modules, one concern each: `fixtures` (the RayCluster and its pods, from testkit.kuberay_pods), `container`
(the rendered container and the env a kubelet would give it), `netns` (the network namespace and its
ports), `redis_server`, `node` (one Ray "pod" in PID + mount namespaces), `driver` (a `kubectl exec`
program), `cluster` (the session's tier and a test's head + worker). Nothing in them knows about the
webhook: they run whatever container they are given.
"""

"""Shared support for the tests, the benchmark (bench/) and `make demo` (hack/demo.py): processes, the real
webhook, a local control plane, KubeRay's operator and the model of the pods KubeRay builds.

Imported as `testkit`: pytest puts hack/ on sys.path (pyproject's `pythonpath`), bench/ and hack/demo.py
insert it themselves. Nothing here is part of the webhook package, and nothing here imports `tests`.
"""

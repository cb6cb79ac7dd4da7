"""The metrics.k8s.io API: object rendering, Kubernetes formatting, selectors, discovery."""

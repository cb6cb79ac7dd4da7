"""A simulated Kubernetes cluster: kubelets and a kube-apiserver stand-in."""

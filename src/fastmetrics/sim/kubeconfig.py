"""Kubeconfig files for the simulated cluster (what kubectl and fastmetrics read)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

__all__ = ["write_kubeconfig"]


def write_kubeconfig(
    path: Path | str,
    server_url: str,
    ca_file: Path | str,
    token: str | None = None,
    client_cert: Path | str | None = None,
    client_key: Path | str | None = None,
    *,
    user_name: str = "sim-admin",
    context_name: str = "sim",
    cluster_name: str = "sim",
    namespace: str | None = None,
) -> Path:
    """Write a kubeconfig with one cluster, one user and one (current) context.

    The user authenticates with ``token`` or with ``client_cert``/``client_key`` (both
    given), or both. Paths are written absolute, so the file works from any directory.
    The file is created with mode 0600, as kubectl expects for credentials.
    """
    if (client_cert is None) != (client_key is None):
        raise ValueError("client_cert and client_key go together")
    if token is None and client_cert is None:
        raise ValueError("give a token or a client certificate and key")
    user: dict[str, Any] = {}
    if token is not None:
        user["token"] = token
    if client_cert is not None and client_key is not None:
        user["client-certificate"] = str(Path(client_cert).resolve())
        user["client-key"] = str(Path(client_key).resolve())
    context: dict[str, Any] = {"cluster": cluster_name, "user": user_name}
    if namespace is not None:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": cluster_name,
            "cluster": {
                "server": server_url,
                "certificate-authority": str(Path(ca_file).resolve()),
            },
        }],
        "users": [{"name": user_name, "user": user}],
        "contexts": [{"name": context_name, "context": context}],
        "current-context": context_name,
        "preferences": {},
    }
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    out.chmod(0o600)
    return out

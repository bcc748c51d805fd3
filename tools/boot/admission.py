"""Pod Security admission: does a namespace's ``enforce`` level admit a pod?

The checks of the Pod Security Standards (kubernetes.io/docs/concepts/security/pod-security-standards, the
``baseline`` and ``restricted`` profiles as of Kubernetes 1.35) that a pod spec can fail. A namespace
without an ``enforce`` label admits everything (``privileged``), as the API server does by default.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

ENFORCE_LABEL = "pod-security.kubernetes.io/enforce"
LEVELS = ("privileged", "baseline", "restricted")
# Capabilities baseline allows to be added (the standard's "Capabilities" control).
BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                         "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
RESTRICTED_VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                           "projected", "secret"}


def _containers(spec: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    yield from spec.get("initContainers") or []
    yield from spec.get("containers") or []
    yield from spec.get("ephemeralContainers") or []


def baseline_violations(spec: Mapping[str, Any]) -> list[str]:
    out = []
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            out.append(f"{field}=true")
    for vol in spec.get("volumes") or []:
        if "hostPath" in vol:
            out.append(f"hostPath volume {vol.get('name')!r}")
    pod_ctx = spec.get("securityContext") or {}
    if (pod_ctx.get("seccompProfile") or {}).get("type") == "Unconfined":
        out.append("pod seccompProfile Unconfined")
    for c in _containers(spec):
        ctx = c.get("securityContext") or {}
        name = c.get("name", "?")
        if ctx.get("privileged"):
            out.append(f"container {name!r} privileged")
        added = set((ctx.get("capabilities") or {}).get("add") or []) - BASELINE_CAPABILITIES
        if added:
            out.append(f"container {name!r} adds capabilities {sorted(added)}")
        if any(p.get("hostPort") for p in c.get("ports") or []):
            out.append(f"container {name!r} uses hostPort")
        if (ctx.get("seccompProfile") or {}).get("type") == "Unconfined":
            out.append(f"container {name!r} seccompProfile Unconfined")
    return out


def restricted_violations(spec: Mapping[str, Any]) -> list[str]:
    out = baseline_violations(spec)
    pod_ctx = spec.get("securityContext") or {}
    for vol in spec.get("volumes") or []:
        kinds = set(vol) - {"name"}
        if kinds and not kinds <= RESTRICTED_VOLUME_TYPES:
            out.append(f"volume {vol.get('name')!r} of type {sorted(kinds)}")
    if pod_ctx.get("runAsUser") == 0:
        out.append("pod runAsUser 0")
    for c in _containers(spec):
        ctx = c.get("securityContext") or {}
        name = c.get("name", "?")
        if ctx.get("allowPrivilegeEscalation") is not False:
            out.append(f"container {name!r} allowPrivilegeEscalation not false")
        non_root = ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot"))
        if non_root is not True:
            out.append(f"container {name!r} runAsNonRoot not true")
        if ctx.get("runAsUser") == 0:
            out.append(f"container {name!r} runAsUser 0")
        seccomp = (ctx.get("seccompProfile") or pod_ctx.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"container {name!r} seccompProfile not RuntimeDefault/Localhost")
        caps = ctx.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"container {name!r} does not drop ALL capabilities")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            out.append(f"container {name!r} adds capabilities beyond NET_BIND_SERVICE")
    return out


def violations(level: str, spec: Mapping[str, Any]) -> list[str]:
    if level == "privileged":
        return []
    if level == "baseline":
        return baseline_violations(spec)
    if level == "restricted":
        return restricted_violations(spec)
    raise ValueError(f"unknown Pod Security level {level!r}")


def namespace_level(namespace_obj: Mapping[str, Any] | None, mode: str = "enforce") -> str:
    """The namespace's Pod Security level for ``mode`` (enforce, warn or audit; unlabelled: privileged)."""
    if not namespace_obj:
        return "privileged"
    return (namespace_obj.get("metadata", {}).get("labels") or {}).get(f"pod-security.kubernetes.io/{mode}", "privileged")

"""Nothing secret in the synthesized templates, manifests or Helm values."""

from __future__ import annotations

import json

from compliance.secrets_scan import scan_object, scan_text


def test_templates_carry_no_secrets(any_platform):
    findings = []
    for path in sorted(any_platform.outdir.glob("assembly-*/*.template.json")):
        text = path.read_text()
        findings += scan_text(text, path.name)
        findings += scan_object(json.loads(text), path.name)
    assert findings == []


def test_manifests_and_helm_values_carry_no_secrets(any_platform):
    findings = []
    for res in any_platform.assembly.kube_resources():
        payload = res.values if res.kind == "helm" else res.objects
        findings += scan_text(json.dumps(payload), res.logical_id)
        findings += scan_object(payload, res.logical_id)
    assert any_platform.assembly.kube_resources()
    assert findings == []


def test_the_scanner_finds_planted_secrets():
    planted = {
        "hub": {"config": {"NativeAuthenticator": {"admin_password": "Zq8!vR2#pL9xW4@m"}}},
        "aws": "AKIAIOSFODNN7EXAMPLE",
        "manifest": {"kind": "Secret", "metadata": {"name": "t"}, "stringData": {"token": "x"}},
    }
    text_findings = scan_text(json.dumps(planted), "planted")
    object_findings = scan_object(planted, "planted") + scan_object(planted["manifest"], "planted")
    assert any("AWS access key id" in f for f in text_findings)
    assert any("admin_password" in f for f in object_findings)
    assert any("carries literal data" in f for f in object_findings)


def test_references_and_placeholders_are_not_secrets():
    ok = {"env": [{"name": "RAY_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {"name": "ray-auth-token", "key": "token"}}}],
          "client_secret": "${UserPoolClient.ClientSecret}", "tokenSecretName": "ray-auth-token"}
    assert scan_object(ok, "ok") == []

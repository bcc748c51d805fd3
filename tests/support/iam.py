"""Every IAM policy statement of a set of synthesized templates, for the IAM policy tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Mapping


@dataclass(frozen=True)
class Statement:
    stack: str
    path: str  # the policy's construct path (aws:cdk:path), or its logical id
    index: int
    statement: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.stack} {self.path} {self.statement.get('Sid') or f'#{self.index}'}"


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def allow_statements(templates: Mapping[str, Mapping[str, Any]]) -> Iterator[Statement]:
    """Allow statements of every AWS::IAM::Policy, AWS::IAM::ManagedPolicy and inline role policy."""
    for stack, template in templates.items():
        for logical_id, res in template.get("Resources", {}).items():
            props = res.get("Properties", {})
            if res["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
                docs = [props["PolicyDocument"]]
            elif res["Type"] == "AWS::IAM::Role":
                docs = [p["PolicyDocument"] for p in props.get("Policies", [])]
            else:
                continue
            path = res.get("Metadata", {}).get("aws:cdk:path", logical_id)
            for doc in docs:
                for index, statement in enumerate(as_list(doc.get("Statement", []))):
                    if statement.get("Effect", "Allow") == "Allow":
                        yield Statement(stack, path, index, statement)

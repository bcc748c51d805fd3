"""What CloudFormation's own resource schemas say about an update: which properties force a replacement,
which ones name the resource, and in which order a replacement happens.

The schemas are the registry's provider schemas that cfn-lint ships per region (read through cfn-lint's
schema manager, so the suite and this tool read the same files). Nothing here is hand-written per type:
a type without a schema is reported as "unknown", never guessed.

- ``createOnlyProperties``: changing any of them (or anything below them) replaces the resource.
- The resource's *identity*: the properties that must be unique in the account, so that a replacement
  whose identity does not change collides with the resource it replaces ("CloudFormation cannot update a
  stack when a custom-named resource requires replacing"). It is the schema's ``primaryIdentifier`` when
  every part of it is a writable property (``RoleName``; ``ClusterName`` + ``AddonName``); otherwise the
  create-only property that names this type (``Name``, or ``<Type>Name`` for a suffix of the type name:
  ``NodegroupName``, ``QueueName``, ``GroupName`` for a security group), scoped by the other create-only
  ``...Name``/``...Id`` properties (``ClusterName``, ``VpcId``). ``LayerName`` is not an identity: a layer
  version with the same name is a new version, not a clash.
- ``replacementStrategy``: ``delete_then_create`` types are deleted before their replacement exists, so
  their names cannot collide (they are gone for the duration instead).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

DEFAULT_REGION = "us-east-1"

Pointer = tuple[str, ...]  # a property path below Properties, "*" for any list item


@dataclass(frozen=True)
class ResourceSchema:
    type_name: str
    known: bool
    create_only: tuple[Pointer, ...] = ()
    read_only: frozenset[str] = frozenset()
    identity: tuple[str, ...] = ()
    delete_then_create: bool = False


def _pointer(text: str) -> Pointer:
    parts = text.strip("/").split("/")
    return tuple(parts[1:]) if parts and parts[0] == "properties" else tuple(parts)


def _identity(type_name: str, primary: list[Pointer], create_only: tuple[Pointer, ...],
              read_only: frozenset[str]) -> tuple[str, ...]:
    primary_props = [p[0] for p in primary if len(p) == 1]
    if primary_props and len(primary_props) == len(primary) and not any(p in read_only for p in primary_props):
        return tuple(primary_props)
    top = [p[0] for p in create_only if len(p) == 1 and p[0] not in read_only]
    last = type_name.split("::")[-1]
    suffixes = {last[i:] for i in range(len(last)) if last[i].isupper()}
    names = [p for p in top if p == "Name" or (p.endswith("Name") and p[:-4] in suffixes)]
    if not names:
        return ()
    scope = [p for p in top if p not in names and (p.endswith("Name") or p.endswith("Id"))]
    return tuple(names + scope)


@lru_cache(maxsize=None)
def schema_for(type_name: str, region: str = DEFAULT_REGION) -> ResourceSchema:
    """The update-relevant facts of ``type_name``'s provider schema in ``region`` (Custom::* included)."""
    from cfnlint.schema import PROVIDER_SCHEMA_MANAGER
    from cfnlint.schema._exceptions import ResourceNotFoundError

    try:
        raw = PROVIDER_SCHEMA_MANAGER.get_resource_schema(region, type_name).schema
    except ResourceNotFoundError:
        return ResourceSchema(type_name=type_name, known=False)
    create_only = tuple(_pointer(p) for p in raw.get("createOnlyProperties", []))
    read_only = frozenset(_pointer(p)[0] for p in raw.get("readOnlyProperties", []) if _pointer(p))
    primary = [_pointer(p) for p in raw.get("primaryIdentifier", [])]
    return ResourceSchema(
        type_name=type_name,
        known=True,
        create_only=create_only,
        read_only=read_only,
        identity=_identity(type_name, primary, create_only, read_only),
        delete_then_create=raw.get("replacementStrategy") == "delete_then_create",
    )


def overlaps(changed: tuple, pointer: Pointer) -> bool:
    """True when a change at ``changed`` touches ``pointer``: one is a prefix of the other ("*" = any item)."""
    for got, want in zip(changed, pointer):
        if want != "*" and str(got) != want:
            return False
    return True


def pointer_text(pointer: Pointer) -> str:
    return ".".join(pointer).replace(".*", "[*]")

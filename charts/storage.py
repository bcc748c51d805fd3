"""Cluster-wide storage: encrypted gp3 through the EBS CSI driver, in two StorageClasses.

* ``gp3`` (the default): the volume goes with its claim.
* ``gp3-retain``: the volume outlives its claim, its namespace and the cluster (``reclaimPolicy: Retain``).
  User homes and the hub's database use it unless ``jupyterhub.keep_homes_on_destroy`` is false, so a
  teardown or a rebuilt stack never deletes anyone's work; the volumes stay in EC2, tagged by the driver
  with the claim's name and namespace, until someone deletes them.
"""

from __future__ import annotations

import cdk8s
from constructs import Construct

from charts.k8s import api_object

DEFAULT_STORAGE_CLASS = "gp3"
RETAIN_STORAGE_CLASS = "gp3-retain"
CLUSTER_TAG = "dynamic-factory/cluster"


class StorageChart(cdk8s.Chart):
    def __init__(self, scope: Construct, construct_id: str, *, kms_key_arn: str | None = None,
                 cluster_name: str | None = None) -> None:
        """``cluster_name``: tagged on every volume (``dynamic-factory/cluster``), so volumes kept after a teardown
        can be told apart from another cluster's in the same account (EBS CSI ``tagSpecification_N``)."""
        super().__init__(scope, construct_id, disable_resource_name_hashes=True)
        parameters = {"type": "gp3", "encrypted": "true", "csi.storage.k8s.io/fstype": "ext4"}
        if cluster_name:
            parameters["tagSpecification_1"] = f"{CLUSTER_TAG}={cluster_name}"
        if kms_key_arn:
            parameters["kmsKeyId"] = kms_key_arn
        for name, reclaim, default in ((DEFAULT_STORAGE_CLASS, "Delete", True), (RETAIN_STORAGE_CLASS, "Retain", False)):
            metadata: dict = {"name": name}
            if default:
                metadata["annotations"] = {"storageclass.kubernetes.io/is-default-class": "true"}
            api_object(
                self,
                name,
                {
                    "apiVersion": "storage.k8s.io/v1",
                    "kind": "StorageClass",
                    "metadata": metadata,
                    "provisioner": "ebs.csi.aws.com",
                    "parameters": dict(parameters),
                    "reclaimPolicy": reclaim,
                    "volumeBindingMode": "WaitForFirstConsumer",
                    "allowVolumeExpansion": True,
                },
            )

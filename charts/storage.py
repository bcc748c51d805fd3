"""Cluster-wide storage: the default StorageClass (encrypted gp3 through the EBS CSI driver)."""

from __future__ import annotations

import cdk8s
from constructs import Construct

from charts.k8s import api_object

DEFAULT_STORAGE_CLASS = "gp3"


class StorageChart(cdk8s.Chart):
    def __init__(self, scope: Construct, construct_id: str, *, kms_key_arn: str | None = None) -> None:
        super().__init__(scope, construct_id, disable_resource_name_hashes=True)
        parameters = {"type": "gp3", "encrypted": "true", "csi.storage.k8s.io/fstype": "ext4"}
        if kms_key_arn:
            parameters["kmsKeyId"] = kms_key_arn
        api_object(
            self,
            "gp3",
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {
                    "name": DEFAULT_STORAGE_CLASS,
                    "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
                },
                "provisioner": "ebs.csi.aws.com",
                "parameters": parameters,
                "reclaimPolicy": "Delete",
                "volumeBindingMode": "WaitForFirstConsumer",
                "allowVolumeExpansion": True,
            },
        )

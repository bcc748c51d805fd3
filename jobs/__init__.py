"""Dynamic Factory validation job: distributed XGBoost on Ray Train (no CDK, no cdk8s)."""

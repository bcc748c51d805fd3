"""First-boot model of a synthesized platform (see tools/boot/model.py); ``python -m tools.boot cdk.out``."""

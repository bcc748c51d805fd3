#!/usr/bin/env python3
"""Entry point: load and validate the config, build the platform stage, synthesize."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import aws_cdk as cdk  # noqa: E402

from config import ConfigError, load_from_context  # noqa: E402

STAGE_ID = "DynamicFactory"


def build_app(app: cdk.App):
    """Validate the config found in ``app``'s context and add the platform to ``app``."""
    from stages import PlatformStage

    config = load_from_context(app.node.get_all_context())
    return PlatformStage(app, STAGE_ID, config=config)


def main() -> int:
    app = cdk.App()
    try:
        build_app(app)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    app.synth()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the staged assets carry: only what the code needs, never a developer's dotfiles.

The runner's job source and the notebook image's build context are taken from the repository root with
exclude patterns; a pattern list that forgets dotfiles ships `.git`, `.venv`, an `.npmrc` with a token or an
`.env` to S3/ECR at deploy time.
"""

from __future__ import annotations


def _staged_dirs(synth):
    return [d for d in synth.outdir.glob("asset.*") if d.is_dir()]


def test_no_staged_asset_carries_a_dotfile(platform):
    dirs = _staged_dirs(platform)
    assert dirs, "no staged directory assets found"
    found = [str(p.relative_to(platform.outdir)) for d in dirs for p in d.rglob(".*")]
    assert found == []


def test_the_runner_and_image_assets_hold_only_their_sources(platform):
    tops = {frozenset(p.name for p in d.iterdir()) for d in _staged_dirs(platform)}
    assert frozenset({"deploy", "jobs"}) in tops  # the validation runner's job source
    assert frozenset({"images", "jobs", "notebooks"}) in tops  # the notebook image's build context
    assert frozenset({"images", "jobs"}) in tops  # the Ray image's build context


def test_each_image_context_holds_only_its_own_dockerfile_directory(platform):
    """The Ray image's context carries images/ray (not the notebook's files) and the notebook's carries
    images/notebook: a change to one image does not rebuild, re-upload and re-pull the other."""
    contexts = {frozenset(p.name for p in (d / "images").iterdir())
                for d in _staged_dirs(platform) if (d / "images").is_dir()}
    assert contexts == {frozenset({"ray"}), frozenset({"notebook"})}

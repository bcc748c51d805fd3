"""GPU mode of the validation job, without a GPU and without a Ray cluster.

What is checked here is the plan: how the device is chosen, what the trainer asks Ray for
(ScalingConfig), what XGBoost is told (its parameters), and how each worker picks its device from what
Ray gives it. ``tests/jobs/test_job_local_ray.py`` runs that plan on a local Ray that declares GPUs;
neither proves anything about CUDA itself, which only a GPU node can.
"""

from __future__ import annotations

import os

import pytest

from jobs.config import (
    DEVICES,
    GPU_WORKERS_ENV,
    JobConfig,
    build_parser,
    choose_device,
    config_from_args,
    device_problem,
    parse_flag,
    resources_per_worker,
    worker_xgboost_device,
    xgboost_params,
)


def cfg(*argv):
    return config_from_args(build_parser().parse_args(list(argv)))


@pytest.fixture(autouse=True)
def environ_restored():
    """build_trainer sets Ray Train's local-run variables in os.environ: none of it outlives a test."""
    before = dict(os.environ)
    yield
    for key in set(os.environ) - set(before):
        del os.environ[key]
    os.environ.update(before)


def test_device_flag_defaults_to_cpu_and_is_validated(capsys):
    assert cfg().device == "cpu"
    assert cfg("--device", "cuda").device == "cuda" and cfg("--device", "auto").device == "auto"
    with pytest.raises(SystemExit):
        cfg("--device", "tpu")
    assert "invalid choice: 'tpu'" in capsys.readouterr().err


@pytest.mark.parametrize("kwargs,expected", [
    # What the platform knows at synth time wins on a cluster ...
    (dict(local=False, gpu_workers=True), "cuda"),
    (dict(local=False, gpu_workers=False, cluster_gpus=4), "cpu"),
    # ... else what the cluster has now, or what its autoscaler may start.
    (dict(local=False, cluster_gpus=1), "cuda"),
    (dict(local=False, configured_gpus=8), "cuda"),
    (dict(local=False, configured_gpus=None), "cpu"),
    (dict(local=False), "cpu"),
    # An embedded Ray: the platform's variable says nothing about this machine, and xgboost-cpu has no CUDA.
    (dict(local=True, gpu_workers=True), "cpu"),
    (dict(local=True, cluster_gpus=2), "cpu"),
    (dict(local=True, cluster_gpus=2, xgboost_has_cuda=True), "cuda"),
])
def test_auto_device(kwargs, expected):
    assert choose_device("auto", **kwargs) == expected


@pytest.mark.parametrize("requested", ["cpu", "cuda"])
def test_an_explicit_device_is_kept(requested):
    assert choose_device(requested, local=False, gpu_workers=requested == "cpu") == requested
    with pytest.raises(ValueError, match="device must be one of"):
        choose_device("gpu", local=False)


def test_gpu_runs_that_could_never_start_fail_fast():
    assert "embedded local Ray has no GPU" in device_problem("cuda", local=True, cluster_gpus=0, configured_gpus=None)
    assert "no node group with GPUs" in device_problem("cuda", local=False, cluster_gpus=0, configured_gpus=0)
    # GPU nodes that the autoscaler starts on demand (min 0) are not a problem, nor is unknown.
    assert device_problem("cuda", local=False, cluster_gpus=0, configured_gpus=4) is None
    assert device_problem("cuda", local=False, cluster_gpus=0, configured_gpus=None) is None
    assert device_problem("cpu", local=True, cluster_gpus=0, configured_gpus=0) is None


@pytest.mark.parametrize("value,expected", [(None, None), ("", None), ("1", True), ("on", True),
                                            ("0", False), (" FALSE ", False)])
def test_gpu_workers_variable(value, expected):
    assert parse_flag(GPU_WORKERS_ENV, value) is expected


def test_gpu_workers_variable_refuses_other_values():
    with pytest.raises(ValueError, match="DF_RAY_GPU_WORKERS='maybe'"):
        parse_flag(GPU_WORKERS_ENV, "maybe")


@pytest.mark.parametrize("planned,gpu_ids,visible,expected", [
    ("cpu", [], None, "cpu"),
    ("cpu", ["0"], "0", "cpu"),  # a CPU run never touches a GPU it happens to have
    # Ray Train's XGBoost backend: each worker sees only its own GPU, which is its cuda:0.
    ("cuda", ["3"], "3", "cuda"),
    ("cuda", [1], "1", "cuda"),
    # Devices shared between the workers of a node (TRAIN_ENABLE_SHARE_CUDA_VISIBLE_DEVICES=1).
    ("cuda", ["2"], "0,1,2,3", "cuda:2"),
    ("cuda", ["3"], "1,3", "cuda:1"),
    ("cuda", ["0"], "GPU-1f3c", "cuda"),  # UUIDs: Ray's own assignment stands
])
def test_worker_device(planned, gpu_ids, visible, expected):
    assert worker_xgboost_device(planned, gpu_ids, visible) == expected


def test_a_cuda_worker_without_a_gpu_is_an_error():
    with pytest.raises(RuntimeError, match="no GPU"):
        worker_xgboost_device("cuda", [], None)


def test_resources_per_worker():
    c = JobConfig(cpus_per_worker=3)
    assert resources_per_worker(c, "cpu") == {"CPU": 3}
    assert resources_per_worker(c, "cuda") == {"CPU": 3, "GPU": 1}


def test_booster_parameters_differ_only_by_device():
    c = cfg("--device", "cuda")
    gpu, cpu = xgboost_params(c, nthread=2), xgboost_params(cfg(), nthread=2)
    assert gpu["device"] == "cuda" and cpu["device"] == "cpu"
    assert gpu["tree_method"] == cpu["tree_method"] == "hist"
    assert {k: v for k, v in gpu.items() if k != "device"} == {k: v for k, v in cpu.items() if k != "device"}
    assert xgboost_params(cfg("--device", "auto"), nthread=1)["device"] == "cpu"  # undecided: never guess cuda


# -------------------------------------------------------------------------- the trainer (no cluster)


@pytest.fixture(scope="module")
def train():
    pytest.importorskip("ray.train")
    pytest.importorskip("xgboost")
    from jobs import train

    return train


@pytest.mark.parametrize("address", [None, "ray://head:10001"])
def test_the_gpu_configuration_builder(train, tmp_path, address):
    c = cfg("--device", "cuda", "--workers", "3", "--cpus-per-worker", "2", "--storage-path", str(tmp_path),
            *(["--address", address] if address else []))
    trainer = train.build_trainer(c, "gpu-plan")
    scaling = trainer.scaling_config
    assert scaling.use_gpu is True and scaling.num_workers == 3
    assert scaling.resources_per_worker == {"CPU": 2, "GPU": 1}
    assert scaling._resources_per_worker_not_none == {"CPU": 2, "GPU": 1}  # what Ray Train will reserve
    loop = trainer.train_loop_config
    assert loop["device"] == "cuda" and loop["params"]["device"] == "cuda"
    assert loop["params"]["tree_method"] == "hist" and loop["device_override"] is None
    assert isinstance(trainer.backend_config, train.QuietXGBoostConfig)


def test_the_cpu_configuration_is_the_same_builder(train, tmp_path):
    trainer = train.build_trainer(cfg("--storage-path", str(tmp_path)), "cpu-plan")
    assert trainer.scaling_config.use_gpu is False
    assert trainer.scaling_config.resources_per_worker == {"CPU": 1}
    assert trainer.train_loop_config["params"]["device"] == "cpu"


def test_only_an_embedded_ray_drops_the_placement_group_cleaner(train, tmp_path):
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

    local = train.build_trainer(cfg("--storage-path", str(tmp_path)), "local")
    remote = train.build_trainer(cfg("--storage-path", str(tmp_path), "--address", "ray://h:10001"), "remote")

    def cleaners(trainer):
        return [c for c in trainer._create_default_callbacks() if isinstance(c, PlacementGroupCleanerCallback)]

    assert cleaners(local) == [] and len(cleaners(remote)) == 1


def test_the_collective_start_line_is_recognised(train):
    assert train._COLLECTIVE_START.search("[08:21:01] Task [xgboost.ray-rank=00000000]:51a8979f01000000 got rank 0")
    assert not train._COLLECTIVE_START.search("[08:21:01] WARNING: something XGBoost wants you to see")


def test_devices_are_one_list():
    assert DEVICES == ("cpu", "cuda", "auto")


def test_the_runner_passes_the_synth_time_fact():
    pytest.importorskip("aws_cdk")
    from cdk_constructs.validation_runner import validation_job_args

    base = ["--workers", "4", "--rows", "500000"]
    assert validation_job_args(base) == base  # no GPU group: the job's default (cpu), the command as before
    assert validation_job_args(base, gpu_workers=True) == base + ["--device", "cuda"]
    parsed = cfg(*validation_job_args(base, gpu_workers=True))
    assert parsed.device == "cuda" and parsed.workers == 4
    with pytest.raises(ValueError, match="already choose a device"):
        validation_job_args(base + ["--device", "cpu"], gpu_workers=True)

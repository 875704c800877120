"""Issue #22: jobs made once, run by an executor; the results directory is the single source of
truth (a run one executor stopped is resumed by another); --device never enters a run's key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tiltedsam.cli import main
from tiltedsam.experiments.configs import DataConfig, TrainConfig
from tiltedsam.experiments.executors import LocalExecutor, make_jobs, run_job
from tiltedsam.experiments.run_control import Stopped
from tiltedsam.experiments.sweep import make_executor, sweep
from tiltedsam.experiments.train import train_run
from tiltedsam.optim import parse_method

from .reliability.conftest import tiny_data, write_mnist

CONFIG = TrainConfig(model="mlp", epochs=3, batch_size=32)


pytestmark = pytest.mark.usefixtures("one_thread")


def _data(tmp_path: Path) -> DataConfig:
    path = write_mnist(tmp_path / "mnist.npz", train=96, test=32)
    return DataConfig(dataset="mnist", data_path=str(path), val_size=16)


def _no_clocks(history):
    return [{k: v for k, v in h.items() if k not in ("wall_time", "cpu_time")} for h in history]


def test_make_jobs_is_spec_major_and_checks_the_device(tmp_path):
    data = _data(tmp_path)
    jobs = make_jobs(["erm", "sam"], [0, 1], root=tmp_path, data=data, config=CONFIG)
    assert [(j.spec, j.seed) for j in jobs] == [("erm", 0), ("erm", 1), ("sam", 0), ("sam", 1)]
    assert {j.device for j in jobs} == {"cpu"} and {j.threads for j in jobs} == {None}
    with pytest.raises(ValueError, match="device"):
        make_jobs(["erm"], [0], root=tmp_path, data=data, config=CONFIG, device="tpu")


def test_a_hook_stops_a_run_after_its_checkpoint_and_a_rerun_resumes_it_exactly():
    data, method = tiny_data(), parse_method("sam")
    whole = train_run(method, data, CONFIG, 0, progress=False)
    seen = []

    def stop_after_first(record):
        seen.append(record["epoch"])
        return True

    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        checkpoint = Path(folder) / "checkpoint.pt"
        with pytest.raises(Stopped) as stopped:
            train_run(method, data, CONFIG, 0, progress=False, checkpoint=checkpoint,
                      on_epoch=stop_after_first)  # fmt: skip
        assert seen == [1] and len(stopped.value.history) == 1
        resumed = train_run(method, data, CONFIG, 0, progress=False, checkpoint=checkpoint)
    assert _no_clocks(resumed.history) == _no_clocks(whole.history)
    assert resumed.test_accuracy == whole.test_accuracy and resumed.device == "cpu"


def test_the_hook_is_not_asked_after_the_last_epoch():
    calls = []

    def never_stop(record) -> bool:
        calls.append(record["epoch"])
        return False

    result = train_run(parse_method("erm"), tiny_data(), CONFIG, 0, progress=False,
                       on_epoch=never_stop)  # fmt: skip
    assert calls == [1, 2] and len(result.history) == 3


class StopAt:
    """A picklable hook: stop after epoch ``epoch``."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def __call__(self, record) -> bool:
        return record["epoch"] >= self.epoch


def test_a_run_stopped_in_one_executor_is_resumed_by_another(tmp_path):
    data = _data(tmp_path)
    (job,) = make_jobs(["sam"], [0], root=tmp_path / "out", data=data, config=CONFIG,
                       identity=data.identity())  # fmt: skip
    from dataclasses import replace

    stopped = run_job(replace(job, hook=StopAt(1)))  # in this process
    assert stopped["stopped"] and len(stopped["history"]) == 1
    (run,) = (tmp_path / "out" / "runs" / "sam").iterdir()
    assert (run / "checkpoint.pt").exists() and not (run / "summary.json").exists()
    (result,) = LocalExecutor(workers=2).run([job])  # a pool process resumes it
    assert len(result["history"]) == 3
    assert _no_clocks(result["history"][:1]) == _no_clocks(stopped["history"])
    reference = run_job(replace(job, root=str(tmp_path / "ref")))
    assert _no_clocks(result["history"]) == _no_clocks(reference["history"])


def test_the_device_is_recorded_in_the_result_and_never_in_the_key(tmp_path):
    data = _data(tmp_path)
    kwargs = dict(seeds=[0], config=CONFIG, dataset="mnist", data_path=data.data_path,
                  val_size=16, out=tmp_path / "out")  # fmt: skip
    (first,) = sweep(["erm"], device="cpu", **kwargs)
    (again,) = sweep(["erm"], device="auto", **kwargs)  # auto is the CPU here: read back
    assert first["device"] == again["device"] == "cpu"
    assert again["history"] == first["history"]  # the same run, not trained again
    (summary,) = (tmp_path / "out").glob("runs/erm/*/summary.json")
    assert json.loads(summary.read_text())["result"]["device"] == "cpu"
    assert "device" not in json.loads(summary.read_text())["config"]["train"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without a GPU")
def test_device_cuda_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    assert main(["compare", "--methods", "erm", "--device", "cuda", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "device 'cuda' needs a CUDA GPU" in err and "--device auto or cpu" in err
    out = tmp_path / "sweep"  # the sweep refuses before it writes sweep.json or claims a run
    assert main(["sweep", "--grid", "erm", "--device", "cuda", "--out", str(out)]) == 2
    assert "device 'cuda' needs a CUDA GPU" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_executor_options_are_checked_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match=r"cpus_per_run \(--cpus-per-run\) only apply to"):
        make_executor("local", cpus_per_run=2)
    with pytest.raises(ValueError, match=r"address \(--ray-address\) only apply to --executor"):
        make_executor("local", address="auto")
    with pytest.raises(ValueError, match="executor must be one of"):
        make_executor("slurm")
    with pytest.raises(ValueError, match="max_retries"):
        make_executor("local", max_retries=-1)
    with pytest.raises(ValueError, match="--search and --trials go together"):
        sweep(["erm"], trials=3, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_command_line_offers_what_the_modules_accept():
    from tiltedsam import cli
    from tiltedsam.experiments import run_control, search
    from tiltedsam.experiments import sweep as sweep_module

    assert cli.EXECUTORS == sweep_module.EXECUTORS
    assert cli.SAMPLERS == search.SAMPLERS
    assert cli.DEVICES == run_control.DEVICES

"""Training on a tiny random BERT: it learns a separable toy task, multitask runs score every
task, checkpoints are atomic and loadable, and a stopped run resumes to the same weights."""

from pathlib import Path

import pytest
import torch

from powerbert.config import HeadConfig, TrainConfig
from powerbert.model import checkpoint as ckpt
from powerbert.training.callbacks import EvalResult, TrainCallbacks
from powerbert.training.loop import train_subset


class Recorder(TrainCallbacks):
    def __init__(self):
        self.evals: list[EvalResult] = []
        self.steps: list[int] = []
        self.starts = []

    def on_start(self, info):
        self.starts.append(info)

    def on_step(self, step, epoch, losses, lr):
        self.steps.append(step)

    def on_eval(self, result):
        self.evals.append(result)


def tiny_config(model_dir, data_dir, **kw) -> TrainConfig:
    base = dict(
        data_dir=str(data_dir), model=str(model_dir), epochs=6, lr=1e-3, batch_size=16,
        precision="fp32", warmup=0.0, checkpoint_every_s=1e9,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_single_task_learns_separable_toy_sst(tiny_model_dir, toy_data_dir, tmp_path):
    rec = Recorder()
    result = train_subset(tiny_config(tiny_model_dir, toy_data_dir, tasks=("sst",)), tmp_path, rec)
    assert result.status == "finished"
    assert [e.epoch for e in rec.evals] == [1, 2, 3, 4, 5, 6]
    assert result.best_scores["sst"] > 0.6  # chance is 0.2
    assert (tmp_path / "best.safetensors").exists() and (tmp_path / "best.json").exists()
    assert ckpt.read_json(tmp_path / "best.json")["config"]["tasks"] == ["sst"]


def test_multitask_pcgrad_scores_every_task(tiny_model_dir, toy_data_dir, tmp_path):
    rec = Recorder()
    config = tiny_config(tiny_model_dir, toy_data_dir, tasks=("sst", "para", "sts"), epochs=2, max_train=64)
    result = train_subset(config, tmp_path, rec)
    assert set(result.best_scores) == {"sst", "para", "sts"}
    assert rec.starts[0].train_rows == {"sst": 64, "para": 64, "sts": 64}
    outputs = rec.evals[-1].outputs
    assert outputs["sst"].outputs.shape == (60, 5)
    assert outputs["para"].outputs.shape == (60,)
    assert ((outputs["sts"].outputs >= 0) & (outputs["sts"].outputs <= 5)).all()


@pytest.mark.parametrize("heads", [HeadConfig(para_head="bi", sts_head="regress", pooling="cls")])
def test_alternative_heads_train(tiny_model_dir, toy_data_dir, tmp_path, heads):
    config = tiny_config(tiny_model_dir, toy_data_dir, tasks=("para", "sts"), epochs=1, max_train=32, heads=heads, surgery="sum")
    result = train_subset(config, tmp_path)
    assert set(result.best_scores) == {"para", "sts"}


@pytest.mark.parametrize("surgery", ["pcgrad", "sum"])
def test_balanced_gradients_reach_the_trained_weights(tiny_model_dir, toy_data_dir, tmp_path, surgery):
    # The same run with and without balancing: the setting must reach the step (different
    # weights), be recorded with the model, and leave a single-task run alone.
    def run(balance: str, tasks=("sst", "sts")) -> dict[str, torch.Tensor]:
        folder = tmp_path / f"{balance}-{'+'.join(tasks)}"
        config = tiny_config(tiny_model_dir, toy_data_dir, tasks=tasks, epochs=1, max_train=32, surgery=surgery, balance=balance)
        assert train_subset(config, folder).status == "finished"
        assert ckpt.read_json(folder / "best.json")["config"]["balance"] == balance
        tensors, _ = ckpt.load_tensors(folder / "best.safetensors")
        return tensors

    plain, balanced = run("none"), run("norm")
    assert plain.keys() == balanced.keys() and len(plain) > 10
    assert any(not torch.allclose(plain[k], balanced[k]) for k in plain)
    alone_plain, alone_balanced = run("none", ("sst",)), run("norm", ("sst",))
    assert all(torch.equal(alone_plain[k], alone_balanced[k]) for k in alone_plain)


@pytest.mark.parametrize(("setting", "precision", "expected"), [
    ("auto", "bf16", "eager"), ("auto", "fp32", "sdpa"), ("sdpa", "bf16", "sdpa"), ("eager", "fp32", "eager"),
])
def test_training_step_runs_the_attention_kernel_the_setting_picks(tiny_model_dir, setting, precision, expected):
    from powerbert.model.multitask import build_model
    from powerbert.model.surgery import make_combiner
    from powerbert.training.step import TrainStep, make_optimizer

    # torch's dropout masks: packed ones rename eager attention (tests/test_packed_dropout.py).
    config = TrainConfig(tasks=("sst",), model=str(tiny_model_dir), precision=precision, attention=setting, dropout_masks="torch")
    model = build_model(config.model, config.tasks, config.heads)
    step = TrainStep(model, make_optimizer(model, config), make_combiner("sum", 0), config, torch.device("cpu"))
    assert step.net.encoder.config._attn_implementation == expected  # the module the passes run on


def test_auto_attention_keeps_sdpa_off_the_cpu():
    from powerbert.model.device import training_attention

    assert training_attention("auto", torch.device("cuda"), "bf16") == "sdpa"
    assert training_attention("eager", torch.device("cuda"), "bf16") == "eager"


def test_eager_and_sdpa_attention_train_the_same_weights(tiny_model_dir, toy_data_dir, tmp_path):
    # The two kernels compute the same attention: in fp32 a run with either ends on the same
    # weights, up to float rounding; with different padding masks mishandled they would not.
    # Both with torch's dropout masks, which SDPA's CPU kernel draws as eager attention does.
    def run(attention: str) -> dict[str, torch.Tensor]:
        config = tiny_config(tiny_model_dir, toy_data_dir, tasks=("sst", "sts"), epochs=1, max_train=48, attention=attention,
                             dropout_masks="torch")
        assert train_subset(config, tmp_path / attention).status == "finished"
        return _weights(tmp_path / attention / "last.safetensors")

    sdpa, eager = run("sdpa"), run("eager")
    assert sdpa.keys() == eager.keys() and len(sdpa) > 10
    for name in sdpa:
        assert torch.allclose(sdpa[name], eager[name], atol=1e-4), name


def _weights(path: Path) -> dict[str, torch.Tensor]:
    tensors, _ = ckpt.load_tensors(path)
    return {k: v for k, v in tensors.items() if k.startswith("model.")}


@pytest.mark.parametrize(("surgery", "passes"), [
    ("pcgrad", {}), ("pcgrad", {"dropout_masks": "torch"}), ("alternate", {}),
    ("alternate", {"precision": "bf16", "train_weights": "bf16"}),
])
def test_stop_then_resume_matches_uninterrupted_run(tiny_model_dir, toy_data_dir, tmp_path, surgery, passes):
    kw = dict(tasks=("sst", "sts"), epochs=2, max_train=48, surgery=surgery, **passes)
    straight = Recorder()
    train_subset(tiny_config(tiny_model_dir, toy_data_dir, **kw), tmp_path / "a", straight)

    first = Recorder()
    calls = iter(range(1000))
    result = train_subset(
        tiny_config(tiny_model_dir, toy_data_dir, **kw), tmp_path / "b", first,
        should_stop=lambda: next(calls) >= 4,  # stop mid-epoch, after 4 steps
    )
    assert result.status == "stopped" and result.step == 4
    second = Recorder()
    result = train_subset(tiny_config(tiny_model_dir, toy_data_dir, **kw), tmp_path / "b", second, resume=True)
    assert result.status == "finished"
    assert second.starts[0].start_step == 4
    assert first.steps + second.steps == straight.steps  # no step repeated or missing
    a, b = _weights(tmp_path / "a" / "last.safetensors"), _weights(tmp_path / "b" / "last.safetensors")
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name
    assert [e.scores for e in straight.evals] == pytest.approx([e.scores for e in first.evals + second.evals])


def test_corrupt_checkpoint_is_refused_with_its_path(tmp_path):
    path = tmp_path / "last.safetensors"
    ckpt.atomic_save_tensors(path, {"x": torch.ones(100)}, {"step": 1})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ckpt.CheckpointError, match=str(path)):
        ckpt.load_tensors(path)


def test_atomic_write_leaves_no_temporaries_and_stale_ones_are_cleaned(tmp_path):
    ckpt.atomic_save_tensors(tmp_path / "best.safetensors", {"x": torch.zeros(3)})
    ckpt.atomic_write_json(tmp_path / "best.json", {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.json", "best.safetensors"]
    stale = tmp_path / (ckpt.TMP_PREFIX + "best.safetensorsXYZ")
    stale.write_bytes(b"half")
    assert ckpt.clean_stale_temporaries(tmp_path) == [stale]
    assert not stale.exists()


def test_multitask_pcgrad_with_the_l2_term_trains_past_its_first_step(tiny_model_dir, toy_data_dir, tmp_path):
    # The paper's recipe: PCGrad and the explicit L2 term. Adding the L2 term to gradients that
    # view PCGrad's kept buffer once pulled the buffer into autograd's graph, and the second
    # step's combine into it failed.
    config = tiny_config(tiny_model_dir, toy_data_dir, tasks=("sst", "sts"), epochs=1, max_train=48, l2=1e-3,
                         surgery="pcgrad")
    assert train_subset(config, tmp_path / "run").step == 3

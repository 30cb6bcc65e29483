"""The word-embedding table trained row by row (`embedding_update = "rows"`, RowAdamW): a step
equals dense AdamW's where dense AdamW has anything to do, and rows no batch touched keep their
weights, moments and decay."""

import pytest
import torch

from powerbert.config import TrainConfig
from powerbert.model import checkpoint as ckpt
from powerbert.model.device import row_embedding_update
from powerbert.model.multitask import build_model, load_encoder, load_tokenizer
from powerbert.training.loop import train_subset
from powerbert.training.step import make_optimizer
from tests.test_train import tiny_config

TABLE = "model.encoder.embeddings.word_embeddings.weight"


def _train(tiny_model_dir, toy_data_dir, out, **kw) -> dict[str, torch.Tensor]:
    config = tiny_config(tiny_model_dir, toy_data_dir, **kw)
    assert train_subset(config, out).status == "finished"
    tensors, _ = ckpt.load_tensors(out / "last.safetensors")
    return {k: v for k, v in tensors.items() if k.startswith("model.")}


@pytest.mark.parametrize("tasks", [("sst",), ("sst", "sts")])
def test_a_first_step_by_rows_is_dense_adamws_step(tiny_model_dir, toy_data_dir, tmp_path, tasks):
    # One step from fresh moments: dense AdamW moves an untouched row by nothing (zero gradient,
    # zero moments) unless weight decay pulls it, so without decay both updates are the same
    # step on every weight, PCGrad's multitask step included.
    kw = dict(tasks=tasks, epochs=1, max_train=16, weight_decay=0.0)
    dense = _train(tiny_model_dir, toy_data_dir, tmp_path / "dense", embedding_update="dense", **kw)
    rows = _train(tiny_model_dir, toy_data_dir, tmp_path / "rows", embedding_update="rows", **kw)
    assert dense.keys() == rows.keys() and TABLE in rows
    for name in dense:
        assert torch.allclose(dense[name], rows[name], atol=1e-6), name


def test_rows_touched_at_every_step_follow_adamw_exactly_step_after_step():
    # Where every step touches every row, lazy and dense AdamW are the same algorithm: moments,
    # bias correction and weight decay must agree at every step, not only the first.
    from powerbert.training.row_adamw import RowAdamW

    torch.manual_seed(0)
    sparse, dense = torch.nn.Embedding(6, 4, sparse=True), torch.nn.Embedding(6, 4)
    dense.weight.data.copy_(sparse.weight.data)
    by_rows = RowAdamW([{"params": [sparse.weight], "rows": True}], lr=0.05, weight_decay=0.1)
    reference = torch.optim.AdamW([dense.weight], lr=0.05, weight_decay=0.1)
    for step in range(8):
        ids = torch.randperm(6).repeat(2)[: 6 + step % 3]  # every row, some twice
        target = torch.randn(len(ids), 4)
        for table, optimizer in ((sparse, by_rows), (dense, reference)):
            optimizer.zero_grad()
            ((table(ids) - target) ** 2).sum().backward()
            optimizer.step()
        assert torch.allclose(sparse.weight, dense.weight, atol=1e-6), step


@pytest.mark.parametrize("tasks", [("sst",), ("sst", "sts")])
def test_rows_no_batch_touches_keep_their_weights(tiny_model_dir, toy_data_dir, tmp_path, tasks):
    # [MASK] is in the vocabulary but in no input: by rows, its row never moves; dense AdamW's
    # weight decay and L2 term move every row.
    before = load_encoder(str(tiny_model_dir)).get_input_embeddings().weight.detach()
    mask = load_tokenizer(str(tiny_model_dir)).mask_token_id
    kw = dict(tasks=tasks, epochs=2, max_train=48, weight_decay=0.01, l2=0.01)
    rows = _train(tiny_model_dir, toy_data_dir, tmp_path / "rows", embedding_update="rows", **kw)[TABLE]
    dense = _train(tiny_model_dir, toy_data_dir, tmp_path / "dense", embedding_update="dense", **kw)[TABLE]
    assert torch.equal(rows[mask], before[mask])
    assert not torch.equal(dense[mask], before[mask])
    moved = (rows != before).any(dim=1)
    assert 0 < int(moved.sum()) < len(before)


def test_the_default_trains_the_table_dense_on_a_cpu(tiny_model_dir):
    # The row-wise table (with packed dropout masks) cost SST 0.8 points over seven seeds
    # (bench/RESULTS.md, "The SST seeds in fp32"): it is opt-in, `embedding_update = "rows"`.
    config = TrainConfig(tasks=("sst",), model=str(tiny_model_dir))
    assert config.embedding_update == "dense"
    model = build_model(config.model, config.tasks, config.heads)
    assert make_optimizer(model, config).row_params == []
    rows = TrainConfig(tasks=("sst",), model=str(tiny_model_dir), embedding_update="rows")
    assert make_optimizer(model, rows).row_params == [model.encoder.get_input_embeddings().weight]


def test_auto_trains_the_table_by_rows_on_a_cpu_only():
    assert row_embedding_update("auto", torch.device("cpu"))
    assert not row_embedding_update("auto", torch.device("cuda"))
    assert not row_embedding_update("dense", torch.device("cpu"))
    assert row_embedding_update("rows", torch.device("cuda"))


def test_an_experiment_stored_before_the_setting_resumes_with_the_dense_table(tiny_model_dir, toy_data_dir, tmp_path):
    # Its runs' resume checkpoints hold dense AdamW's state for the table: resuming them with a
    # rows group would not load.
    from powerbert.runner import experiments, worker
    from powerbert.store import Store

    config = tiny_config(tiny_model_dir, toy_data_dir, tasks=("sst",))
    with Store(tmp_path / "runs.db") as store:
        exp = experiments.create_experiment(store, config, name="older", out_root=tmp_path / "runs")
        run = store.runs(exp.id)[0]
        assert worker.run_config(store, run).embedding_update == "dense"
        stored = store.get_experiment(exp.id).config
        stored["train"]["embedding_update"] = "auto"  # stored before dense became the default
        store.update_experiment(exp.id, config=stored)
        assert worker.run_config(store, run).embedding_update == "auto"  # resumes with its rows
        stored = store.get_experiment(exp.id).config
        del stored["train"]["embedding_update"]
        store.update_experiment(exp.id, config=stored)
        assert worker.run_config(store, run).embedding_update == "dense"

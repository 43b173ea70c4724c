"""Video-level evaluation, fitting a decision and writing it into a model config."""

import json
from dataclasses import replace

import numpy as np
import pytest
from scipy.special import expit, logit
from sklearn.metrics import log_loss, roc_auc_score
from typer.testing import CliRunner

from fakescope.calibrate import Calibration, write_calibrated, write_temperature
from fakescope.cli import app
from fakescope.evaluate import (
    decision_metrics,
    labelled_files,
    read_rows,
    relabel,
    size_bucket,
    video_report,
    wilson,
    write_rows,
)
from fakescope.metrics import fit_platt
from fakescope.models.ensemble import load_ensemble, rescaled
from fakescope.types import Decision, FakescopeError


def row(label, probability, predicted, group="", face_size=100.0, file="x.mp4"):
    return {
        "file": file,
        "label": label,
        "group": group,
        "probability": probability,
        "predicted": predicted,
        "face_size": face_size,
        "reason": "",
        "credentials": "none",
    }


def test_wilson_interval_matches_the_textbook_values():
    # Wilson 95% intervals: 0/10 -> [0, 0.2775]; 5/10 -> [0.2366, 0.7634].
    assert wilson(0, 10)["high"] == pytest.approx(0.2775, abs=1e-4) and wilson(0, 10)["low"] == 0
    five = wilson(5, 10)
    assert (five["low"], five["high"]) == pytest.approx((0.2366, 0.7634), abs=1e-4)


def test_rates_count_each_answer_against_its_class():
    rows = [
        row(0, 0.1, "real"),
        row(0, 0.9, "fake"),
        row(0, 0.6, "inconclusive"),
        row(0, None, "inconclusive"),
        row(1, 0.95, "fake"),
        row(1, 0.97, "fake"),
        row(1, 0.2, "real"),
        row(1, None, "no_face"),
    ]
    m = decision_metrics(rows)
    assert m["false_alarm"]["value"] == pytest.approx(1 / 4)
    assert m["detection"]["value"] == pytest.approx(2 / 4)
    assert m["miss"]["value"] == pytest.approx(1 / 4)
    assert m["inconclusive"]["value"] == pytest.approx(3 / 8)  # no answer: inconclusive or no face
    scored = [r for r in rows if r["probability"] is not None]
    expected = roc_auc_score([r["label"] for r in scored], [r["probability"] for r in scored])
    assert m["auc"]["value"] == pytest.approx(expected)
    assert m["count"] == {"real": 4, "fake": 4}
    assert m["answers"] == {"fake": 3, "real": 2, "inconclusive": 2, "no_face": 1, "error": 0}


def test_a_manipulation_is_ranked_against_all_reals():
    rows = [
        row(0, 0.1, "real", "original"),
        row(0, 0.4, "real", "original"),
        row(1, 0.9, "fake", "Deepfakes"),
        row(1, 0.3, "real", "NeuralTextures"),
    ]
    report = video_report(rows, "manipulation")
    assert report["groups"]["Deepfakes"]["auc"]["value"] == 1.0
    assert report["groups"]["NeuralTextures"]["auc"]["value"] == 0.5  # between the two reals
    assert report["groups"]["original"]["auc"] is not None


def test_face_size_buckets():
    assert [size_bucket(s) for s in (None, 20, 48, 100, 500)] == [
        "no face",
        "0-48 px",
        "48-96 px",
        "96-160 px",
        "160+ px",
    ]
    rows = [
        row(0, 0.1, "real", face_size=30),
        row(1, 0.9, "fake", face_size=200),
        row(1, None, "no_face", face_size=None),
    ]
    assert set(video_report(rows, None)["sizes"]) == {"0-48 px", "160+ px", "no face"}


def test_rows_round_trip_and_relabel(tmp_path):
    rows = [row(0, 0.3, "real"), row(1, 0.7, "fake"), row(1, None, "inconclusive", face_size=None)]
    write_rows(rows, tmp_path / "videos.csv")
    back = read_rows(tmp_path / "videos.csv")
    assert back == rows
    relabelled = relabel(back, Decision(0.75, 0.25))
    assert [r["predicted"] for r in relabelled] == ["inconclusive", "inconclusive", "inconclusive"]
    with pytest.raises(FakescopeError, match=r"videos\.csv"):
        read_rows(tmp_path / "missing.csv")


def test_manifest_columns_join_files(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "fake").mkdir()
    (tmp_path / "real" / "a.mp4").write_bytes(b"")
    (tmp_path / "fake" / "b.mp4").write_bytes(b"")
    (tmp_path / "manifest.csv").write_text(
        "file,manipulation\nreal/a.mp4,original\nfake/b.mp4,FaceSwap\n"
    )
    files = labelled_files(tmp_path)
    assert [(f.path.name, f.label, f.columns["manipulation"]) for f in files] == [
        ("a.mp4", 0, "original"),
        ("b.mp4", 1, "FaceSwap"),
    ]


def test_calibrated_config_loads_with_its_decision(random_model, tmp_path):
    rng = np.random.default_rng(1)
    rows = [row(0, float(p), "real") for p in rng.uniform(0.2, 0.8, 20)]
    rows += [row(1, float(p), "fake") for p in rng.uniform(0.5, 1.0, 20)] + [
        row(1, None, "inconclusive")
    ]
    write_rows(rows, tmp_path / "videos.csv")
    config = tmp_path / "fitted" / "model.json"
    fit = Calibration(str(random_model), max_false_alarm=0.1, max_miss=0.1, note="test videos")
    decision = write_calibrated(tmp_path / "videos.csv", config, fit)
    saved = json.loads(config.read_text())
    assert saved["decision"]["fitted_on"] == "test videos" and saved["decision"]["videos"] == 40
    ensemble = load_ensemble(config, backend="torch")
    assert ensemble.decision == decision and decision.real_below < decision.threshold
    reals = np.array([r["probability"] for r in rows if r["label"] == 0])
    assert np.mean(reals >= decision.threshold) <= 0.1


def test_bad_decision_block_is_a_weights_error(random_model, tmp_path):
    config = tmp_path / "bad.json"
    config.write_text(
        json.dumps(
            {
                "format": "fakescope-ensemble",
                "name": "bad",
                "decision": {"threshold": 0.3, "real_below": 0.7},
                "members": [{"config": str(random_model), "weight": 1.0}],
            }
        )
    )
    with pytest.raises(FakescopeError, match="bad decision block") as error:
        load_ensemble(config, backend="torch")
    assert error.value.exit_code == 5


def overconfident_scores(path, n=400, seed=2, fakes=0.5, lean=0.0):
    """scores.npz whose probabilities are too sharp: for classes at N(+-1, 1) the calibrated
    logit is 2x, these are 3x - `lean`, so the temperature that fits is about 1.5 and the
    bias about lean / 1.5, whatever share of `fakes` the crops have."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < fakes).astype(int)
    logits = 3 * (rng.normal(0, 1, n) + (2 * labels - 1)) - lean
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, probs=1 / (1 + np.exp(-logits)), labels=labels)
    return logits, labels


def test_fitted_temperature_and_bias_rescale_the_combined_probability(random_model, tmp_path):
    # Two fakes per real (as DFDC's training set), from a model that leans to real.
    scores = tmp_path / "eval" / "scores.npz"
    logits, labels = overconfident_scores(scores, n=6000, fakes=2 / 3, lean=0.75)
    config = tmp_path / "fitted.json"
    fit = Calibration(str(random_model), note="held-out crops")
    tempered = write_temperature(scores, config, fit)
    assert tempered.temperature == pytest.approx(1.5, abs=0.1)
    # The classes weigh equally, so the share of fakes does not enter the bias (it would
    # add log 2 = 0.69 unweighted).
    assert tempered.bias == pytest.approx(0.5, abs=0.1)
    assert tempered.log_loss_after < tempered.log_loss_before
    # The fit minimises the class-weighted log loss: no nearby (T, b) does better.
    weights = np.where(labels == 1, 0.5 / labels.mean(), 0.5 / (1 - labels.mean()))

    def loss(t, b):
        return log_loss(labels, expit(logits / t + b), sample_weight=weights)

    best = loss(tempered.temperature, tempered.bias)
    for dt, db in ((0.02, 0), (-0.02, 0), (0, 0.02), (0, -0.02)):
        assert best <= loss(tempered.temperature + dt, tempered.bias + db)
    ensemble = load_ensemble(config, backend="torch")
    assert (ensemble.temperature, ensemble.bias) == (tempered.temperature, tempered.bias)
    assert ensemble.describe()["temperature"]["fitted_on"] == "held-out crops"
    name = ensemble.members[0].spec.name
    probs = np.array([0.02, 0.3, 0.5, 0.9, 1.0])
    z = logit(np.clip(probs, 1e-6, 1 - 1e-6))
    expected = expit(z / tempered.temperature + tempered.bias)
    assert np.allclose(ensemble.combine({name: probs}), expected)
    # The new fit composes with the one the config already has: the same scores fitted
    # again give z / T**2 + b / T + b.
    again = write_temperature(scores, tmp_path / "twice.json", replace(fit, model=str(config)))
    t, b = tempered.temperature, tempered.bias
    assert again.temperature == pytest.approx(t**2, rel=1e-4)
    assert again.bias == pytest.approx(b / t + b, rel=1e-4)


def test_platt_refuses_scores_that_rank_the_wrong_way():
    labels = np.array([0, 0, 1, 1] * 10)
    with pytest.raises(FakescopeError, match="do not rank fakes above reals"):
        fit_platt(np.where(labels == 1, -2.0, 2.0) + np.linspace(0, 1, 40), labels)


def test_temperature_drops_a_stale_decision_and_refuses_other_scores(random_model, tmp_path):
    rows = [row(0, float(p), "real") for p in np.linspace(0.1, 0.6, 10)]
    rows += [row(1, float(p), "fake") for p in np.linspace(0.4, 0.95, 10)]
    write_rows(rows, tmp_path / "videos.csv")
    decided = tmp_path / "decided.json"
    write_calibrated(tmp_path / "videos.csv", decided, Calibration(str(random_model)))
    overconfident_scores(tmp_path / "eval" / "scores.npz")
    tempered = write_temperature(
        tmp_path / "eval" / "scores.npz", tmp_path / "t.json", Calibration(str(decided))
    )
    assert tempered.dropped_decision and "decision" not in json.loads(
        (tmp_path / "t.json").read_text()
    )
    # scores.npz beside the metrics.json of another model: refused, nothing written.
    described = load_ensemble(random_model, backend="torch").describe()
    described["members"][0]["sha256"] = "0" * 64
    (tmp_path / "eval" / "metrics.json").write_text(json.dumps({"model": described}))
    with pytest.raises(FakescopeError, match="was scored by"):
        write_temperature(
            tmp_path / "eval" / "scores.npz", tmp_path / "no.json", Calibration(str(random_model))
        )
    assert not (tmp_path / "no.json").exists()


def test_calibrate_cli_fits_a_temperature_and_rejects_bad_scores(random_model, tmp_path):
    runner = CliRunner()
    overconfident_scores(tmp_path / "scores.npz")
    out = tmp_path / "t.json"
    result = runner.invoke(
        app,
        [
            "calibrate",
            str(tmp_path / "scores.npz"),
            "--model",
            str(random_model),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "temperature" in result.output and out.is_file()
    (tmp_path / "bad.npz").write_bytes(b"not numpy")
    result = runner.invoke(
        app,
        [
            "calibrate",
            str(tmp_path / "bad.npz"),
            "--model",
            str(random_model),
            "--out",
            str(tmp_path / "b.json"),
        ],
    )
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1 and "scores.npz" in result.output


@pytest.mark.parametrize(
    "block",
    [
        {"value": 0},
        {"value": -1.0},
        {"value": "2"},
        "warm",
        {"value": float("inf")},
        {"value": 1.2, "bias": "0.5"},
        {"value": 1.2, "bias": float("inf")},
    ],
)
def test_bad_temperature_block_is_a_weights_error(random_model, tmp_path, block):
    config = tmp_path / "bad.json"
    config.write_text(
        json.dumps(
            {
                "format": "fakescope-ensemble",
                "name": "bad",
                "temperature": block,
                "members": [{"config": str(random_model), "weight": 1.0}],
            }
        ).replace("Infinity", "1e999")
    )
    with pytest.raises(FakescopeError, match="bad temperature block") as error:
        load_ensemble(config, backend="torch")
    assert error.value.exit_code == 5


def test_rescaled_keeps_zero_and_one_finite():
    out = rescaled(np.array([0.0, 0.5, 1.0]), 2.0)
    assert np.isfinite(out).all() and out[1] == pytest.approx(0.5) and 0 < out[0] < out[2] < 1
    assert rescaled(np.array([0.5]), 2.0, bias=1.0)[0] == pytest.approx(expit(1.0))


def test_held_out_files_are_the_clusters_training_holds_out(tmp_path):
    from fakescope.training.data import list_samples, split_by_cluster

    lines = ["path,label,cluster"]
    for i in range(60):
        label = "fake" if i % 3 else "real"
        (tmp_path / label).mkdir(exist_ok=True)
        (tmp_path / label / f"{i}.png").write_bytes(b"")
        lines.append(f"{label}/{i}.png,{int(label == 'fake')},c{i // 3}")
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    _, held = split_by_cluster(list_samples(tmp_path), 0.3)
    files = labelled_files(tmp_path, held_out_share=0.3)
    assert 0 < len(held) < 60
    assert {f.path.resolve() for f in files} == {s.path.resolve() for s in held}
    with pytest.raises(FakescopeError, match="--held-out"):
        labelled_files(tmp_path, held_out_share=1.5)

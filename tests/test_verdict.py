import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fakescope.options import flagged
from fakescope.settings import Settings
from fakescope.types import Decision, FaceScore, SettingError
from fakescope.verdict import (
    Judging,
    choose_frames,
    confident_strategy,
    decide,
    fit_decision,
    mean_strategy,
)


def test_confident_majority_of_confident_fakes_uses_their_mean():
    p = np.array([0.9] * 12 + [0.1] * 8)  # 12 > 20 // 2.5 = 8 and 12 > 11
    assert confident_strategy(p, 32) == pytest.approx(0.9)


def test_confident_needs_more_than_eleven_fakes_in_32_frames():
    p = np.array([0.9] * 11 + [0.5] * 2)  # 11 fakes is not > 11
    assert confident_strategy(p, 32) == pytest.approx(p.mean())


def test_confident_nearly_all_real_uses_mean_of_low_scores():
    p = np.array([0.1] * 19 + [0.05] * 10 + [0.7])  # 29 < 0.2 > 0.9 * 30 = 27
    assert confident_strategy(p, 32) == pytest.approx(np.mean(p[p < 0.2]))


def test_confident_otherwise_plain_mean():
    p = np.array([0.1, 0.5, 0.9, 0.3])
    assert confident_strategy(p, 32) == pytest.approx(0.45)
    assert mean_strategy(p, 32) == pytest.approx(0.45)


def test_count_threshold_uses_floor_division_by_2_5():
    # n = 30: n // 2.5 = 12.0; 12 fakes is not > 12, 13 is.
    twelve = np.array([0.95] * 12 + [0.5] * 18)
    thirteen = np.array([0.95] * 13 + [0.5] * 17)
    assert confident_strategy(twelve, 32) == pytest.approx(twelve.mean())
    assert confident_strategy(thirteen, 32) == pytest.approx(0.95)


def dfdc_winner_confident_strategy(pred, t=0.8):
    """The DFDC 1st place solution's code (selimsef/dfdc_deepfake_challenge), 32 frames a video."""
    pred = np.array(pred)
    sz = len(pred)
    fakes = np.count_nonzero(pred > t)
    if fakes > sz // 2.5 and fakes > 11:
        return np.mean(pred[pred > t])
    elif np.count_nonzero(pred < 0.2) > 0.9 * sz:
        return np.mean(pred[pred < 0.2])
    else:
        return np.mean(pred)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.sampled_from([0.02, 0.1, 0.19, 0.2, 0.5, 0.8, 0.81, 0.9, 0.99]) | st.floats(0, 1),
        min_size=1,
        max_size=32,
    )
)
@example([0.9] * 13 + [0.5] * 19)  # the confident branch fires
@example([0.9] * 12 + [0.1] * 8)  # fires with 20 of 32 frames judged
@example([0.9] * 11 + [0.1] * 8)  # 11 is not > 11
@example([0.1] * 29 + [0.5] * 3)  # nearly all real
def test_at_32_frames_confident_is_the_winners_code_exactly(scores):
    # Any track of up to 32 judged faces (a track may miss frames or have unjudged faces).
    p = np.array(scores)
    assert confident_strategy(p, 32) == dfdc_winner_confident_strategy(p)


@pytest.mark.parametrize(("frames", "needed"), [(1, 1), (4, 2), (8, 4), (11, 5), (16, 7), (64, 26)])
def test_confident_fakes_needed_scale_with_the_frames(frames, needed):
    # A track seen in every frame: `needed` confident fakes fire the branch, one fewer does not.
    def track(fakes):
        return np.array([0.9] * fakes + [0.5] * (frames - fakes))

    assert confident_strategy(track(needed), frames) == pytest.approx(0.9)
    if needed > 1:
        assert confident_strategy(track(needed - 1), frames) == pytest.approx(
            track(needed - 1).mean()
        )


def test_with_eleven_frames_or_fewer_a_confident_majority_still_counts():
    # `fakes > 11` could never fire here: 8 frames, 5 confident fakes and 3 clean frames.
    faces = [face(0, i, 0.95 if i < 5 else 0.1) for i in range(8)]
    assert decide(faces, "confident", frames=8).probability == pytest.approx(0.95)
    assert decide(faces, "mean", frames=8).probability == pytest.approx((5 * 0.95 + 3 * 0.1) / 8)


def face(track, frame, score, size=100.0, sharpness=50.0, qp=None):
    return FaceScore(
        track, frame, frame / 10, (0, 0, size, size), 0.99, {"m": score}, score, size, sharpness, qp
    )


def test_video_probability_is_the_most_suspicious_track():
    faces = [face(0, i, 0.1) for i in range(20)] + [face(1, i, 0.7) for i in range(20)]
    verdict = decide(faces, "mean")
    assert [round(t.probability, 3) for t in verdict.tracks] == [0.1, 0.7]
    assert verdict.probability == pytest.approx(0.7)
    assert verdict.label == "fake" and verdict.deciding_track == 1
    assert len(verdict.chosen_frames) == 4


def test_small_background_face_cannot_decide_but_is_reported():
    # ffpp_yt_c23_033 in miniature: a real main subject, a 24 px face on a studio wall scoring
    # higher.
    faces = [face(0, i, 0.3, size=60) for i in range(32)] + [
        face(1, i, 0.9, size=24) for i in range(7)
    ]
    verdict = decide(faces, "mean")
    assert verdict.label == "real" and verdict.probability == pytest.approx(0.3)
    background = verdict.tracks[1]
    assert (
        background.probability is None
        and background.unjudged == "every face too small (largest 24 px < 48 px)"
    )
    assert all(f.unjudged for f in background.faces)
    assert "1 other track(s) could not be judged" in verdict.reason


def test_swapped_face_among_several_people_is_still_caught():
    faces = [face(t, i, 0.2, size=80) for t in (0, 1) for i in range(32)] + [
        face(2, i, 0.95, size=70) for i in range(32)
    ]
    verdict = decide(faces, "mean")
    assert verdict.label == "fake" and verdict.deciding_track == 2
    assert set(verdict.chosen_frames) <= set(range(32))


def test_no_face_can_be_judged_is_inconclusive_with_the_reason():
    faces = [face(0, i, 0.9, size=30) for i in range(20)] + [
        face(1, i, 0.8, sharpness=2.0) for i in range(20)
    ]
    verdict = decide(faces, "mean")
    assert verdict.label == "inconclusive" and verdict.probability is None
    assert "no face can be judged" in verdict.reason and verdict.deciding_track is None
    assert "too blurred (sharpness 2.0 < 6.0)" in verdict.tracks[1].faces[0].unjudged
    assert verdict.chosen_frames  # maps still drawn, for the face the verdict is about


def test_a_coarsely_coded_track_is_shown_but_cannot_decide():
    # A re-encoded upload: the main face at QP 40 scores 0.9, a finer-coded one 0.2.
    faces = [face(0, i, 0.9, qp=40.0) for i in range(8)] + [
        face(1, i, 0.2, qp=30.0) for i in range(8)
    ]
    verdict = decide(faces, "mean", judging=Judging(max_qp=36))
    assert verdict.label == "real" and verdict.probability == pytest.approx(0.2)
    reason = "too compressed (median H.264 QP 40.0 > 36.0)"
    assert verdict.tracks[0].unjudged == reason
    assert {f.unjudged for f in verdict.tracks[0].faces} == {reason}
    alone = decide(faces[:8], "mean", judging=Judging(max_qp=36))
    assert alone.label == "inconclusive" and reason in alone.reason
    assert decide(faces[:8], "mean", judging=Judging(max_qp=51)).label == "fake"
    # An image, or a codec without quantisers, is judged as before.
    assert decide([face(0, 0, 0.99)], "mean", frames=1, judging=Judging(max_qp=0)).label == "fake"


def test_a_few_faces_with_stray_quantisers_do_not_change_the_track():
    # The decoder now and then reports another picture's quantisers for one frame.
    coarse = [face(0, i, 0.9, qp=44.0) for i in range(6)] + [
        face(0, 6, 0.9, qp=8.6),
        face(0, 7, 0.9, qp=27.4),
    ]
    assert decide(coarse, "mean", judging=Judging(max_qp=36)).label == "inconclusive"
    fine = [face(0, i, 0.9, qp=26.0) for i in range(6)] + [face(0, 6, 0.9, qp=45.0)]
    assert decide(fine, "mean", judging=Judging(max_qp=36)).label == "fake"


def test_a_track_with_too_few_judged_faces_says_what_kept_them_out():
    faces = [face(0, i, 0.9, size=30.0 if i > 1 else 100.0) for i in range(8)]
    faces.append(face(0, 8, 0.9, sharpness=1.0))
    track = decide(faces, "mean").tracks[0]
    assert track.unjudged == "only 2 of 9 faces can be judged (< 4): 6 too small, 1 too blurred"


def test_briefly_tracked_face_cannot_decide():
    faces = [face(0, i, 0.1) for i in range(32)] + [face(1, i, 0.99) for i in range(3)]
    verdict = decide(faces, "mean", frames=32)
    assert (
        verdict.label == "real"
        and "seen too briefly (3 judged faces < 4)" in verdict.tracks[1].unjudged
    )
    # With few analysed frames fewer faces are needed: an image has one.
    assert decide([face(0, 0, 0.99)], "mean", frames=1).label == "fake"
    assert Judging().track_faces_needed(16) == 2


def test_band_between_thresholds_is_inconclusive():
    faces = [face(0, i, 0.6) for i in range(10)]
    band = Decision(threshold=0.8, real_below=0.4)
    verdict = decide(faces, "mean", band)
    assert verdict.label == "inconclusive" and verdict.probability == pytest.approx(0.6)
    assert "between 0.400 and 0.800" in verdict.reason
    assert decide(faces, "mean", Decision(0.59, 0.4)).label == "fake"
    assert decide(faces, "mean", Decision(0.8, 0.61)).label == "real"


def test_bad_thresholds_are_settings_errors():
    """The library names its settings; the CLI shows them as options (test_options)."""
    with pytest.raises(SettingError, match="real_below <= threshold") as raised:
        Decision(threshold=0.4, real_below=0.6)
    assert flagged(raised.value).startswith("need 0 < --real-below <= --threshold < 1")
    with pytest.raises(SettingError):
        Settings(min_track_faces=0)
    with pytest.raises(SettingError, match="real_below must be") as raised:
        Settings(real_below=1.5)
    assert flagged(raised.value) == "--real-below must be between 0 and 1"


def test_settings_override_the_models_fitted_decision():
    fitted = Decision(0.8, 0.6)
    assert Settings().decision(fitted) == fitted
    assert Settings(threshold=0.5).decision(fitted) == Decision(
        0.5, 0.5
    )  # the band cannot pass the threshold
    assert Settings(threshold=0.9, real_below=0.2).decision(fitted) == Decision(0.9, 0.2)


def test_fit_decision_meets_its_targets_on_the_fitting_data():
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(40, int), np.ones(60, int)]
    probs = np.r_[rng.beta(3, 3, 40), rng.beta(6, 2, 60)]  # overlapping: a band is needed
    d = fit_decision(labels, probs, max_false_alarm=0.1, max_miss=0.1)
    assert d.real_below < d.threshold
    assert np.mean(probs[labels == 0] >= d.threshold) <= 0.1
    assert np.mean(probs[labels == 1] < d.real_below) <= 0.1
    # The lowest threshold with that false-alarm rate: one step lower lets in one more real.
    assert np.mean(probs[labels == 0] >= np.sort(probs[labels == 0])[-5]) > 0.1


def test_fit_decision_without_overlap_has_no_band():
    d = fit_decision(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9]), 0.0, 0.0)
    assert d.threshold == d.real_below == pytest.approx((0.2 + 0.8) / 2, abs=1e-6)


def test_no_faces_gives_no_face_label():
    verdict = decide([], "confident")
    assert (
        verdict.label == "no_face" and verdict.probability is None and verdict.chosen_frames == []
    )
    assert verdict.reason == "no face found in 32 frames"


def test_chosen_frames_are_the_peaks_of_spread_spans():
    scores = [0.1, 0.9, 0.2, 0.3, 0.8, 0.1, 0.2, 0.2, 0.95, 0.1, 0.7, 0.6]
    faces = [face(0, i, s) for i, s in enumerate(scores)]
    assert choose_frames(faces, k=4) == [1, 4, 8, 10]
    assert choose_frames(faces[:2], k=4) == [0, 1]

"""The keep rule: an edit must beat the best by more than min_delta and by more than chance."""

import numpy as np

from automodel.search.acceptance import Evidence, is_improvement, paired_evidence


def _probs(labels: np.ndarray, wrong: np.ndarray, classes: int = 10) -> np.ndarray:
    """One-hot predictions, right except at the indices in `wrong`."""
    pred = labels.copy()
    pred[wrong] = (labels[wrong] + 1) % classes
    return np.eye(classes, dtype=np.float32)[pred]


def _pair(tmp_path, labels, best_wrong, new_wrong):
    np.save(tmp_path / "best.npy", _probs(labels, best_wrong))
    np.save(tmp_path / "new.npy", _probs(labels, new_wrong))
    return paired_evidence(tmp_path / "new.npy", tmp_path / "best.npy", labels)


def test_a_one_image_gain_on_400_images_is_chance(tmp_path):
    labels = np.arange(400) % 10
    # The best misses images 0-49; the edit fixes 5 of them and breaks 4 others: +1 image, +0.25 points.
    ev = _pair(tmp_path, labels, np.arange(50), np.concatenate([np.arange(5, 50), np.arange(100, 104)]))
    assert (ev.gained, ev.lost) == (5, 4) and abs(ev.z - 1 / 3) < 1e-9
    assert not is_improvement(0.8775, 0.875, 0.002, ev, min_z=1.0)
    assert is_improvement(0.8775, 0.875, 0.002, ev, min_z=0.0), "min_z 0 is the plain min_delta rule"


def test_a_clear_gain_is_kept(tmp_path):
    labels = np.arange(400) % 10
    ev = _pair(tmp_path, labels, np.arange(60), np.concatenate([np.arange(30, 60), np.arange(100, 105)]))
    assert (ev.gained, ev.lost) == (30, 5) and ev.z > 4
    assert is_improvement(0.9125, 0.85, 0.002, ev, min_z=1.0)


def test_min_delta_still_applies_and_missing_predictions_fall_back_to_it(tmp_path):
    assert not is_improvement(0.851, 0.85, 0.002, Evidence(gained=40, lost=0), min_z=1.0)
    labels = np.arange(40) % 10
    np.save(tmp_path / "best.npy", _probs(labels, np.arange(3)))
    assert paired_evidence(tmp_path / "missing.npy", tmp_path / "best.npy", labels) is None
    np.save(tmp_path / "short.npy", _probs(labels[:30], np.arange(3)))
    assert paired_evidence(tmp_path / "short.npy", tmp_path / "best.npy", labels) is None
    assert is_improvement(0.9, 0.85, 0.002, None, min_z=1.0)


def test_standard_error_of_a_perfect_score_is_about_one_image():
    from automodel.search.acceptance import standard_error

    assert abs(standard_error(0.9, 400) - 0.015) < 1e-4
    assert abs(standard_error(1.0, 287) - 1.0 / 287) < 1e-4  # not zero: one image either way

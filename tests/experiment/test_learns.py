"""The package's real recipe learns: on a small task that a working classifier cannot get wrong (a long bright streak
on a starry sky against the same sky without one), the two-phase Fashion-MNIST recipe must tell the classes apart on
held-out folds. A broken loss, label order, preprocessing, freezing or weight loading fails here; the other runner
tests check only files and plumbing."""

from meteor_tf.config import ExperimentConfig
from meteor_tf.experiment import runner as cv
from tests.conftest import write_streak_task


def test_the_two_phase_recipe_learns_a_separable_task(tmp_path):
    data = write_streak_task(tmp_path / "captures", per_class=64)
    # The shipped Fashion-MNIST backbone (no --weights: the real preset), the paper's head (fastai's BatchNorms),
    # cached-feature head phase, then fine-tuning with the first 6 convs frozen, Adam + SGDR at the package's LRs;
    # only the sizes and epochs are small.
    config = ExperimentConfig(data=str(data), depth=18, pretrain="fashion_mnist", image_size=32, folds=2,
                              head_epochs=3, fine_tune_epochs=4, batch_size=16, output_dir=str(tmp_path / "runs"),
                              retrain_final=False, seed=5)
    stats = cv.run_experiment(config)["stats"]
    # Measured: 0.961 / AUC 0.996 fine-tuned (head only: AUC 0.998). With Keras's default head BatchNorm momentum
    # (0.99, stale statistics after a few dozen steps) it was 0.844 / 0.998: right ranking, wrong calibration.
    assert stats["fine_tune"]["accuracy"]["mean"] >= 0.93, stats["fine_tune"]
    assert stats["fine_tune"]["auc"]["mean"] >= 0.98, stats["fine_tune"]
    assert stats["head"]["auc"]["mean"] >= 0.95, stats["head"]

"""Training building blocks: LR range test, SGDR, phases (compile + fit), distribution strategies.

``distribute`` imports TensorFlow (strategies, the custom multi-worker loop); ``callbacks``, ``schedules`` and
``phases`` use Keras only.
"""

from meteor_tf.training.callbacks import SGDR, LRRangeResult, LRRangeTest, lr_range_test
from meteor_tf.training.phases import compile_for_phase, train_phase
from meteor_tf.training.schedules import sgdr_cycle_epochs, sgdr_lr, sgdr_schedule, whole_cycle_epochs

__all__ = ["LRRangeTest", "LRRangeResult", "lr_range_test", "SGDR", "compile_for_phase", "train_phase",
           "sgdr_cycle_epochs", "whole_cycle_epochs", "sgdr_lr", "sgdr_schedule"]

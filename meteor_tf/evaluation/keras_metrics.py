"""The Keras metric trained models carry: the meteor-class ROC AUC. Registered, so a saved model whose head was
compiled alone (cached features) loads wherever this module is imported — training and serving both import it here,
and serving needs nothing from training."""

from __future__ import annotations

import keras

from meteor_tf import METEOR


@keras.saving.register_keras_serializable(package="meteor_tf")
class MeteorAUC(keras.metrics.AUC):
    """ROC AUC of the meteor-class probability (softmax column ``METEOR``) against ``label == METEOR``, for
    models trained with sparse labels (label 0 = meteor)."""

    def __init__(self, name="meteor_auc", class_index: int = METEOR, **kwargs):
        super().__init__(name=name, **kwargs)
        self.class_index = class_index

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = keras.ops.reshape(y_true, (-1,))
        is_meteor = keras.ops.equal(keras.ops.cast(y_true, "int32"), self.class_index)
        positive = keras.ops.cast(is_meteor, "float32")
        return super().update_state(positive, y_pred[:, self.class_index], sample_weight=sample_weight)

    def get_config(self):
        return {**super().get_config(), "class_index": self.class_index}

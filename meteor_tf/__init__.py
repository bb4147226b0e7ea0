"""meteor_tf: tell meteors from everything else a night-sky camera catches.

A Keras 3 / TensorFlow 2 reimplementation of Galindo & Lorena, "Deep Transfer Learning for Meteor Detection".
"""

__version__ = "0.1.0"

CLASS_NAMES = ("meteor", "non_meteor")
"""Class order everywhere (labels, softmax outputs, folders): index 0 is the meteor class."""
METEOR = 0

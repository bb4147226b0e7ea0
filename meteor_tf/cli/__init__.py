"""The commands, one module each; every one only parses its flags and calls the library.

    train     meteor-train     python -m meteor_tf.main       the experiment runner (cross-validation, final model)
    tune      meteor-tune      python -m meteor_tf.tune       Keras Tuner searches
    export    meteor-export    python -m meteor_tf.export     SavedModel and TFLite exports of a run
    serve     meteor-serve     python -m meteor_tf.serve      TF Serving's REST and gRPC APIs without TF Serving
    predict   meteor-predict   python -m meteor_tf.predict    classify a folder of captures
    evaluate  meteor-evaluate  python -m meteor_tf.evaluate   score a model on your own labelled captures
    tables    meteor-tables    python -m meteor_tf.tables     finished runs in the paper's table layout
    dataset   meteor-dataset   python -m meteor_tf.data.cli   the embedded night_sky dataset
    pretrain  meteor-pretrain  python -m meteor_tf.pretrain   Fashion-MNIST backbone pretraining

Each `run()` is the console script; the `python -m` names are shims kept for existing commands. What the commands
share (logging, exit status 2 on bad input, the absl flags parsers) is in `_common`. The experiment flags are
defined once, in `meteor_tf.flags`.
"""

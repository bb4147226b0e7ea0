"""Deployment: SavedModels in TF Serving's layout (`export`), TFLite for station computers (`tflite`), Grad-CAM heat
maps (`gradcam`), the TF Serving clients (`client`) and a TF Serving-compatible server without Docker (`server`).

Every path feeds the model through `meteor_tf.data.preprocess`, the code training used, so a capture gives the same
probability whether it is scored in training, in a SavedModel, over REST/gRPC or on a Raspberry Pi.
"""

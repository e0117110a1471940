"""Functional smooth activations (see `keras_space.layers.SmoothActivation`)."""

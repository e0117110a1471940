"""keras_space.losses: losses (see DESIGN.md)."""

from keras_space.losses.info_nce import InfoNCE

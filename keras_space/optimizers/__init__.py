"""keras_space.optimizers: optimizer wrappers (see DESIGN.md)."""

from keras_space.optimizers.gradient_accumulator import GradientAccumulator

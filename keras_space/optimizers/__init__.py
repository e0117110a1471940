"""keras_space.optimizers: optimizer wrappers (README: "Gradient accumulation")."""

from keras_space.optimizers.gradient_accumulator import GradientAccumulator

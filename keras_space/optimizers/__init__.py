"""keras_space.optimizers: optimizer wrappers and schedules (README: "Gradient accumulation",
"Fine-tuning a pretrained Transformer")."""

from keras_space.optimizers import schedules
from keras_space.optimizers.gradient_accumulator import GradientAccumulator
from keras_space.optimizers.layerwise_learning_rate import (
    LayerwiseLearningRate,
    layerwise_decay,
)

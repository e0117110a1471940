"""keras_space.growth: function-preserving model growth (README: "Function-preserving widening of a Transformer")."""

from keras_space.growth.widen import narrow_outputs, widen, widen_inputs

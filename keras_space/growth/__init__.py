"""keras_space.growth: function-preserving model growth (see DESIGN.md)."""

from keras_space.growth.widen import narrow_outputs, widen, widen_inputs

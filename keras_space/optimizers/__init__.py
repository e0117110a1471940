"""keras_space.optimizers: public optimizers (see DESIGN.md)."""

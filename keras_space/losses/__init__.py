"""keras_space.losses: public losses (see DESIGN.md)."""

"""keras_space.ops: public ops (see DESIGN.md)."""

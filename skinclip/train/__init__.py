"""Lightning training app for SkinCLIP (kept apart from the model library)."""

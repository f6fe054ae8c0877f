"""Camera and rotation geometry shared by every stage."""

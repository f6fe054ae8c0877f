"""The pieces of ``hoi-train fit`` (:mod:`hoi_training.trainer` assembles them)."""

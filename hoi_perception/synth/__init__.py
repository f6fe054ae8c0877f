"""Synthetic hand-object sequences rendered on the CPU (``hoi-train synth``, and the demo's sequence).

It sits in the runtime package, below both users: the demo renders its sequence with it,
and the training side renders its datasets with it.
"""

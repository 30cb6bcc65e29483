"""The model and what touches its weights: the shared encoder with one head per task
(multitask.py), how multitask gradients are combined (surgery.py: plain sum or PCGrad), the
device and autocast choice (device.py), and checkpoint files (checkpoint.py).

Both training and inference build on this package; neither imports the other.
"""

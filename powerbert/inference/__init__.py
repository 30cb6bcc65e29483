"""Prediction with a finished experiment: loading its best checkpoints once (loading.py),
predicting new text with every model and ensemble (predict.py), and prediction files (files.py).

Never imports the training loop: the device choice it shares with training is in
powerbert.model.device.
"""

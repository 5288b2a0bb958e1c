"""Neural-network surrogates (Flax NNX): models, training data, the training loop, evaluation.

A surrogate knows nothing of filters: it only obeys the forecast-model contract
``(history (W, d), key) -> next (d,)`` (see :func:`scoreda.surrogates.train.forecast_model`).
"""

from scoreda.surrogates import data, evaluate, lstm, train

__all__ = ["data", "evaluate", "lstm", "train"]

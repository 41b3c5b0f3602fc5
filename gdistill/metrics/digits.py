"""A classifier of 8x8 digits trained on sklearn's real digits, to tell whether generated digits show
the requested class. sklearn's logistic regression is enough here: it reaches ~96 % on held-out real
digits and trains in about a second, so benchmarks and tests train it afresh instead of shipping it."""
from __future__ import annotations

import numpy as np
import torch


class DigitsClassifier:
    def __init__(self, seed: int = 0):
        from sklearn.datasets import load_digits
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import train_test_split

        bunch = load_digits()
        x = bunch.images.reshape(len(bunch.images), -1) / 8.0 - 1.0  # the [-1, 1] scale of the dataset
        x_train, x_test, y_train, y_test = train_test_split(x, bunch.target, test_size=0.25, random_state=seed)
        self.model = LogisticRegression(max_iter=2000, C=0.5).fit(x_train, y_train)
        self.held_out_accuracy = float(self.model.score(x_test, y_test))

    def predict(self, samples: torch.Tensor) -> np.ndarray:
        """samples (n, 1, 8, 8) in [-1, 1] -> predicted classes (n,)."""
        return self.model.predict(samples.reshape(len(samples), -1).clamp(-1, 1).numpy())

    def accuracy(self, samples: torch.Tensor, labels: torch.Tensor) -> float:
        """Fraction of samples classified as their requested label."""
        return float((self.predict(samples) == labels.numpy()).mean())

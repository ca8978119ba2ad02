"""Calibration of a classifier's probabilities: temperature scaling and the expected calibration
error (Guo et al., "On Calibration of Modern Neural Networks", 2017).

A classifier trained to high accuracy is usually over-confident; dividing its logits by one
temperature ``T`` fitted on held-out data (the negative log-likelihood minimised over ``T``)
keeps its predictions and makes its probabilities mean what they say, which is what a
``MIN_CONFIDENCE`` threshold below which the answer is "unknown" needs.
"""

import torch
import torch.nn.functional as F


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 200) -> float:
    """The temperature ``T`` in [0.5, 10] that minimises the cross-entropy of
    ``softmax(logits / T)`` on held-out ``logits (N, C)`` and ``labels (N,)`` (L-BFGS on
    ``log T``, starting at 1). The bounds keep a small held-out set that the model happens to
    classify perfectly (where the likelihood grows without end as ``T -> 0``) from making it
    arbitrarily over-confident."""
    logits = logits.detach().double()
    labels = labels.detach().long()
    if logits.ndim != 2 or len(logits) != len(labels) or len(labels) == 0:
        raise ValueError(f"fit_temperature: logits (N, C) and labels (N,) with N > 0, got "
                         f"{tuple(logits.shape)} and {tuple(labels.shape)}")
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp().clamp(0.5, 10.0))


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """ECE: the mean |accuracy - confidence| over ``bins`` equal-width confidence bins, weighted
    by the share of samples in each (confidence = the top probability of ``probs (N, C)``)."""
    probs = probs.detach().double()
    conf, pred = probs.max(1)
    correct = (pred == labels.long()).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    ece = torch.zeros((), dtype=torch.float64)
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.double().mean() * (correct[in_bin].mean() - conf[in_bin].mean()).abs()
    return float(ece)


__all__ = ["fit_temperature", "expected_calibration_error"]

"""A PyTorch reference of the benchmark's training step, for an optional row of train_throughput.py.

The same model and training as the benchmark's JAX rows: an MLP VAE 784-400-20 (ReLU hidden
layers, a linear mean and log-variance head, Bernoulli logits), dynamically binarized pixels,
one reparameterized z per image, the analytic-KL negative ELBO summed over dimensions and
averaged over the batch, Adam with step size 1e-3, batches of 128. It runs with
``torch.compile`` on the loss and its gradient and ``torch.optim.Adam(fused=True)``.

What differs from the JAX rows, and does not change the work per step: PyTorch's default
initialisation (kaiming-uniform kernels and biases, not zeros), and PyTorch's random numbers
(its own generator draws the binarization and z). It trains on the same images in the same
order as the other rows.

PyTorch is not a dependency of the series: ``pip install torch==2.13.0`` (the CPU build) adds it,
and ``train_throughput.py --torch`` then times this row beside the others.
"""

from __future__ import annotations

import os

import numpy as np

INSTALL_HINT = "install PyTorch's CPU build (pip install torch==2.13.0) or run without --torch"


def import_torch():
    """The torch module, or a clear error naming the fix."""
    try:
        import torch
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise SystemExit(f"--torch needs PyTorch, which is not installed: {INSTALL_HINT}.") from error
    return torch


class TorchStep:
    """One PyTorch model and optimizer; :meth:`run` trains on given batches (the caller times it)."""

    def __init__(self, images: np.ndarray, seed: int = 0, learning_rate: float = 1e-3, hidden: int = 400, latent=20):
        torch = import_torch()
        self.torch = torch
        torch.set_num_threads(len(os.sched_getaffinity(0)))
        torch.manual_seed(seed)
        nn = torch.nn
        self.images = torch.from_numpy(np.array(images.reshape(len(images), -1)))  # uint8 (N, 784)
        d = self.images.shape[1]
        self.encoder = nn.Sequential(nn.Linear(d, hidden), nn.ReLU())
        self.mean, self.logvar = nn.Linear(hidden, latent), nn.Linear(hidden, latent)
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, d))
        modules = [self.encoder, self.mean, self.logvar, self.decoder]
        self.params = [p for m in modules for p in m.parameters()]
        self.optimizer = torch.optim.Adam(self.params, lr=learning_rate, fused=True)
        self.loss = torch.compile(self._loss)

    def _loss(self, pixels):
        torch = self.torch
        x = torch.bernoulli(pixels.float() / 255.0)  # dynamic binarization
        h = self.encoder(x)
        mean, logvar = self.mean(h), self.logvar(h)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        logits = self.decoder(z)
        nll = torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
        kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).sum(-1)
        return (nll + kl).mean()  # nats per image

    def run(self, order: np.ndarray, batch_size: int) -> None:
        """One optimizer step per batch ``images[order[i * B:(i + 1) * B]]``."""
        order = self.torch.from_numpy(np.asarray(order, dtype=np.int64))
        for i in range(len(order) // batch_size):
            loss = self.loss(self.images[order[i * batch_size : (i + 1) * batch_size]])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()

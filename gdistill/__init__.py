"""gdistill: distill classifier-free-guided diffusion models into few-step, w-conditioned students."""
__version__ = "0.1.0"

"""vae-bench harness: trains the MNIST VAE on several backends under identical conditions.

The harness core never imports torch or jax; frameworks load only inside the backend that needs them.
"""
__version__ = "0.1.0"

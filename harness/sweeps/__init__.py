"""Sweeps: many jobs (backend x device x seed x latent), their executors (local, Ray) and CPU placement."""

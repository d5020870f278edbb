"""Delivery tooling that runs inside Cloud Build (the canary rollout); imports nothing of training or app."""

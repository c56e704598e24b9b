"""Shared test setup: small, deterministic, CPU-only."""
import os

# Tests never download: make any hub lookup fail fast instead of hanging on the network.
os.environ.setdefault('JAXCLS_OFFLINE', '1')

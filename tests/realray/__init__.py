"""Real-Ray tier: the webhook's rendered configuration run on real Ray and real Redis (pytest -m realray)."""

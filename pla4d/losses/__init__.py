"""Training losses: the perceptual loss (LPIPS) and friends."""

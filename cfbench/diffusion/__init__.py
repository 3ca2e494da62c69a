"""Diffusion backbones: networks (unet, diffae) and the Gaussian diffusion process (gaussian)."""

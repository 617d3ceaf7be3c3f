"""Flowers family: flower photos with a Kornia ViT and a small CNN."""

"""Coarse-to-Fine double-chin removal (Wu et al., SIGGRAPH 2021) as a small library with a CLI."""

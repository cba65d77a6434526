"""dg-chat: a local terminal chat app for block-diffusion language models."""

__version__ = "0.1.0"

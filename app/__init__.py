"""Gradio viewer over ``recon.pipeline``."""

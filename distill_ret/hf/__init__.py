"""Hugging Face checkpoint import and export (safetensors only)."""

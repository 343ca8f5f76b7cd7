"""gpuhost: provision and verify GPU container hosts that serve ComfyUI."""

__version__ = "0.1.0"

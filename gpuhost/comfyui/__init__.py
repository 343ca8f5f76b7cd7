"""ComfyUI on this host: containers, their logs and HTTP API, fed to gpuhost.comfyui.readiness."""

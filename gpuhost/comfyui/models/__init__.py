"""Models outside the image: `gpuhost models sync|verify` copy a manifest's model files from S3 or
https into ComfyUI's folders on the instance's fast disk, resumable, and prove every one is whole.

catalog (the manifest's files), folders (ComfyUI's folder names), safetensors (the header check),
local (a file on disk), source/s3/https (where files come from), sync, verify, report (gpuhost.models/v1).
"""

"""Imported by nothing on the host: proves enclave modules come from the image."""

ORIGIN = "image"

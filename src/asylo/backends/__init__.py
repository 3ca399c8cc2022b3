"""Backends: what actually hosts an enclave's trusted runtime.

`sim` runs it in this process, on worker threads matched to the host's threads (like Asylo's sgx-sim). The remote
backend's proxy server loads enclaves through the same code, so an enclave behaves the same everywhere.
"""

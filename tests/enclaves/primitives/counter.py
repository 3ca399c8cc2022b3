"""Module state of one enclave instance: two instances of one image must not share it."""

calls = 0

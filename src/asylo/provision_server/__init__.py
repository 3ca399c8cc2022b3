"""The provision server (asylo provision-server)."""

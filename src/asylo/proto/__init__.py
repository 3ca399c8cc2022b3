"""Generated protobuf code (do not edit: run `python scripts/gen_protos.py`) and the `.proto` files it comes from."""

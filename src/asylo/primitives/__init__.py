"""The enclave primitives: selectors, byte extents, and how calls cross the boundary.

This is the layer Asylo calls "primitives": an entry call or an exit call is a selector (which function) and a list of
byte extents (its arguments); its answer is a status and a list of extents. Everything above — lifecycle, named entry
points, host calls, protobuf messages — is built from these, which is what lets the same enclave run in-process (sim)
or in a proxy on another machine (remote) without a change to its code.
"""

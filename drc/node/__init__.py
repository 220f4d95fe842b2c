"""DRCC, the per-node daemon applications talk to (``org.drc.Node`` on the system bus).

``identity`` finds who and which job a caller is; ``cache`` holds the node's associations and
what it knows of revocations; ``service`` decides what needs DRCS; ``exports`` puts it on
D-Bus; ``watch`` notices processes exiting.
"""

"""The DRC link: how node daemons (DRCC, root) reach the credential server (DRCS).

Modelled on Slurm's daemons: a TCP stream of length-prefixed frames where every request and
every response is a MUNGE credential whose payload is the JSON message. Each side learns the
other's uid from the decoded credential, frames can't be altered, and a replayed frame is refused
by the decoding side's munged, which remembers every credential it decoded (the embedded default
runs a private munged on loopback). :mod:`drc.link.munge` is the libmunge binding,
:mod:`drc.link.protocol` the framing, :class:`LinkServer` the DRCS end, :class:`LinkClient` the
DRCC end.
"""

from drc.link.client import LinkClient, SyncLinkClient
from drc.link.munge import Decoded, Munge, MungeError
from drc.link.protocol import MAX_FRAME, FrameError
from drc.link.server import LinkPeer, LinkServer

__all__ = [
    "MAX_FRAME",
    "Decoded",
    "FrameError",
    "LinkClient",
    "LinkPeer",
    "LinkServer",
    "Munge",
    "MungeError",
    "SyncLinkClient",
]

"""The tracker's facts as Python sees them: NumPy structured dtypes built from the C structs.

``facts.pxd`` declares, once, what the endpoint trackers establish about each connection: the
struct ``EndpointFacts`` (one endpoint) and ``ConnFacts`` (the connection), every field an
int64 with its meaning beside it. The compiled tracker writes those structs; this module turns
them into ``ENDPOINT_FACTS`` and ``CONN_FACTS``, whose field names, order and offsets are the
C compiler's own layout of the structs (as scikit-learn's ``NODE_DTYPE`` is built from its
``Node``), so Python can never read a field the core does not write.

How to read them (``Tracked.endpoints`` and ``Tracked.conns``):

- ``endpoints``: shape ``(connections, 2)`` of ``ENDPOINT_FACTS``; ``[:, 0]`` is the client,
  ``[:, 1]`` the server. ``endpoints[c, 1]["fin_frame"]`` is the server's first FIN of
  connection c; ``endpoints["cw_since_ns"][:, 0]`` every client's CLOSE_WAIT entry.
- ``conns``: shape ``(connections,)`` of ``CONN_FACTS``: ``conns["closer"]``.
- A field of a structured array is a strided view (a connection's fields lie side by side, as
  the tracker writes them): copy it (``np.ascontiguousarray``) before much vector work on it.
- Values: frames are 1-based capture frame numbers (-1: none), times epoch nanoseconds; states,
  the closer and the bit sets are the enums of ``traceaudit.tracking.states``.

(Cython's buffer formats have no arrays inside a struct, hence two arrays rather than one
record holding both endpoints.)
"""

import numpy as np

cdef EndpointFacts _endpoint
cdef ConnFacts _conn


def _int64_fields(layout: np.dtype, struct: str) -> np.dtype:
    """``layout`` (a struct's dtype as Cython describes it) with every field as np.int64:
    Cython names int64_t 'q' (np.longlong), a type of its own in NumPy 2 beside np.int64 ('l')
    although the two are the same 64 bits, and the tracker's tables have always been int64."""
    for name in layout.names:
        kind = layout.fields[name][0]
        if kind.kind != "i" or kind.itemsize != 8:
            raise TypeError(f"{struct}.{name}: every tracker fact is an int64, not {kind}")
    return np.dtype({"names": list(layout.names),
                     "formats": [np.int64] * len(layout.names),
                     "offsets": [layout.fields[name][1] for name in layout.names],
                     "itemsize": layout.itemsize})


#: One endpoint of one connection (``EndpointFacts``).
ENDPOINT_FACTS = _int64_fields(np.asarray(<EndpointFacts[:1]>(&_endpoint)).dtype,
                               "EndpointFacts")
#: One connection (``ConnFacts``).
CONN_FACTS = _int64_fields(np.asarray(<ConnFacts[:1]>(&_conn)).dtype, "ConnFacts")

ENDPOINT_FIELDS: tuple[str, ...] = ENDPOINT_FACTS.names
CONN_FIELDS: tuple[str, ...] = CONN_FACTS.names


def endpoint_table(n: int) -> np.ndarray:
    """Zeroed facts of ``n`` connections' endpoints: shape (n, 2), [:, 0] client, [:, 1]
    server (the tracker initialises a connection's row at its first segment)."""
    return np.zeros((n, 2), ENDPOINT_FACTS)


def conn_table(n: int) -> np.ndarray:
    """Zeroed facts of ``n`` connections: shape (n,)."""
    return np.zeros(n, CONN_FACTS)

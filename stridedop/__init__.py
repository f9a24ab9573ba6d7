"""stridedop: the linear operator of a convolution as a read-only strided view.

Public names
------------
conv_view
    The operator ``W`` with ``np.tensordot(W, x, x.ndim) == conv(x)`` as a read-only view.
materialize
    A dense, writable copy of such a view, guarded against running out of memory.
OperatorView
    What `conv_view` returns: the read-only view that knows its operator (``W.operator``), so
    that ``np.tensordot(W, x, x.ndim)`` runs through it.
ConvOperator
    The operator as an object, for every padding mode: apply and adjoint (``.H``) with a
    planner that picks the algorithm, the algebra, singular values and norms, dense, sparse,
    SciPy, PyLops and Dask exports.
dottest
    The adjoint test ``<A x, y> == <x, A^H y>`` for any operator.
toeplitz, hankel, circulant, convolution_matrix
    SciPy's structured matrices as read-only views.
"""

from ._conv import conv_view
from ._dottest import dottest
from ._materialize import materialize
from ._operator import ConvOperator
from ._structured import circulant, convolution_matrix, hankel, toeplitz
from ._view import OperatorView

__all__ = [
    "ConvOperator",
    "OperatorView",
    "circulant",
    "conv_view",
    "convolution_matrix",
    "dottest",
    "hankel",
    "materialize",
    "toeplitz",
]
__version__ = "0.2.0.dev0"

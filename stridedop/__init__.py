"""stridedop: the linear operator of a convolution as a read-only strided view.

Public names
------------
conv_view
    The operator ``W`` with ``np.tensordot(W, x, x.ndim) == conv(x)`` as a read-only view.
materialize
    A dense, writable copy of such a view, guarded against running out of memory.
ConvOperator
    The operator as an object: apply, adjoint, dense, sparse and LinearOperator exports.
"""

from ._conv import conv_view
from ._materialize import materialize
from ._operator import ConvOperator

__all__ = ["ConvOperator", "conv_view", "materialize"]
__version__ = "0.1.0"

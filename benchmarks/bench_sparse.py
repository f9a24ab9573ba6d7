"""Sparse export: time against converting the dense operator, and bytes per stored entry."""

import tracemalloc

import numpy as np

import stridedop


class SparseExport:
    params = [["valid", "same"]]
    param_names = ["padding"]
    timeout = 120

    def setup(self, padding):
        try:
            import scipy.sparse
        except ImportError:
            raise NotImplementedError("SciPy is not installed") from None
        self.csr_array = scipy.sparse.csr_array
        kernel = np.random.default_rng(0).standard_normal((3, 3, 8, 8))
        self.op = stridedop.ConvOperator(kernel, (32, 32, 8), padding=padding)

    def time_to_sparse(self, padding):
        self.op.to_sparse()

    def time_csr_from_dense(self, padding):
        self.csr_array(self.op.to_matrix())

    def peakmem_to_sparse(self, padding):
        self.op.to_sparse()

    def track_peak_bytes_per_nonzero(self, padding):
        tracemalloc.start()
        matrix = self.op.to_sparse()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return peak / matrix.nnz

    track_peak_bytes_per_nonzero.unit = "bytes"

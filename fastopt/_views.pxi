# Views of memory that another object owns (included by _core.pyx): fastopt.torch's gradients,
# whose Tensor.numpy() costs more than the rest of their share of a small model's step.

from cpython.ref cimport PyObject, Py_INCREF

cdef extern from "numpy/arrayobject.h":
    # (numpy's own .pxd declares neither: the descr is stolen, so it is a bare pointer here)
    object PyArray_NewFromDescr(void *subtype, void *descr, int nd, cnp.npy_intp *dims,
                                cnp.npy_intp *strides, void *data, int flags, PyObject *obj)
    int PyArray_SetBaseObject(cnp.ndarray arr, PyObject *base) except -1


def view_like(cnp.ndarray template, Py_ssize_t address, object owner):
    """A writeable ndarray of template's dtype, shape and strides on the memory at address, which
    owner keeps alive (it becomes the array's base).  The caller vouches that owner's memory has
    that layout."""
    cdef void *descr = <void *>cnp.PyArray_DESCR(template)
    Py_INCREF(<object>descr)   # PyArray_NewFromDescr steals it
    cdef cnp.ndarray view = PyArray_NewFromDescr(
        <void *>cnp.ndarray, descr, cnp.PyArray_NDIM(template), cnp.PyArray_DIMS(template),
        cnp.PyArray_STRIDES(template), <void *>address, cnp.NPY_ARRAY_WRITEABLE, NULL)
    Py_INCREF(owner)   # and PyArray_SetBaseObject steals this
    PyArray_SetBaseObject(view, <PyObject *>owner)
    return view

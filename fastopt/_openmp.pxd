# OpenMP behind one shim (src_c/omp_shim.h): cimport omp_* from here only.
cdef extern from "omp_shim.h" nogil:
    int fo_omp_max_threads()
    int fo_omp_thread_num()
    const char *fo_openmp_library()

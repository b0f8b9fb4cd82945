/* The one place that knows whether OpenMP exists: serial stand-ins otherwise. */
#ifndef FASTOPT_OMP_SHIM_H
#define FASTOPT_OMP_SHIM_H
#ifdef _OPENMP
#include <omp.h>
static inline int fo_omp_max_threads(void) { return omp_get_max_threads(); }
static inline int fo_omp_thread_num(void) { return omp_get_thread_num(); }
#else
static inline int fo_omp_max_threads(void) { return 1; }
static inline int fo_omp_thread_num(void) { return 0; }
#endif

/* Path of the loaded OpenMP runtime this extension calls; "" if none (omp_library.c). */
const char *fo_openmp_library(void);
#endif

/* Which file holds the OpenMP runtime this extension calls, for show_config().
 *
 * A process can hold several OpenMP runtimes at once (a wheel's vendored
 * libgomp beside torch's, say), and which one serves fastopt is decided by the
 * dynamic linker, not by the build.  So ask the linker: take the address that
 * omp_get_max_threads was bound to here and find the loaded file containing it.
 * Linux uses dl_iterate_phdr (in libc since glibc 2.2.4, so no libdl and no new
 * symbol version for manylinux), macOS dladdr, Windows the module of the address.
 */
#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE /* dl_iterate_phdr */
#endif

#include <stddef.h>
#include <string.h>

#include "omp_shim.h"

#define FO_PATH_MAX 4096
static char fo_omp_path[FO_PATH_MAX];

#if defined(_OPENMP) && defined(_WIN32)
#define WIN32_LEAN_AND_MEAN
#include <windows.h>

static void fo_find_library(const void *address)
{
    HMODULE module = NULL;
    wchar_t wide[FO_PATH_MAX];
    DWORD flags = GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS | GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT;
    if (!GetModuleHandleExW(flags, (LPCWSTR)address, &module)) return;
    DWORD n = GetModuleFileNameW(module, wide, FO_PATH_MAX);
    if (n == 0 || n >= FO_PATH_MAX) return;
    if (!WideCharToMultiByte(CP_UTF8, 0, wide, -1, fo_omp_path, FO_PATH_MAX, NULL, NULL))
        fo_omp_path[0] = '\0';
}

#elif defined(_OPENMP) && defined(__APPLE__)
#include <dlfcn.h>

static void fo_find_library(const void *address)
{
    Dl_info info;
    if (dladdr(address, &info) && info.dli_fname != NULL)
        strncpy(fo_omp_path, info.dli_fname, FO_PATH_MAX - 1);
}

#elif defined(_OPENMP) && defined(__linux__)
#include <link.h>

static int fo_match_object(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    const ElfW(Addr) address = (ElfW(Addr))data;
    for (int k = 0; k < info->dlpi_phnum; k++) {
        const ElfW(Phdr) *segment = &info->dlpi_phdr[k];
        ElfW(Addr) start = info->dlpi_addr + segment->p_vaddr;
        if (segment->p_type == PT_LOAD && address >= start && address < start + segment->p_memsz) {
            /* the main program has an empty name: that is a static runtime */
            strncpy(fo_omp_path, info->dlpi_name[0] ? info->dlpi_name : "(linked into the executable)",
                    FO_PATH_MAX - 1);
            return 1;
        }
    }
    return 0;
}

static void fo_find_library(const void *address)
{
    dl_iterate_phdr(fo_match_object, (void *)address);
}

#else
static void fo_find_library(const void *address) { (void)address; }
#endif

const char *fo_openmp_library(void)
{
    fo_omp_path[0] = '\0';
#ifdef _OPENMP
    /* the function pointer is what this extension's calls go through */
    int (*bound)(void) = omp_get_max_threads;
    fo_find_library((const void *)bound);
#endif
    return fo_omp_path;
}

/* Finding buffers that share memory, for the boundary's checks.
 *
 * A list call of a large model brings hundreds of buffers; comparing all pairs
 * is quadratic and qsort's callback per comparison costs more than the rest of
 * the validation together.  A bottom-up merge sort with the comparison inlined
 * sorts a few hundred intervals in a few microseconds; after sorting by start,
 * an overlap must show between an interval and the widest one before it.
 */
#include <string.h>

#include "fastopt_kernels.h"

static void fo_insertion_sort(fo_interval *iv, fo_index n)
{
    for (fo_index i = 1; i < n; i++) {
        fo_interval x = iv[i];
        fo_index j = i;
        while (j > 0 && iv[j - 1].start > x.start) {
            iv[j] = iv[j - 1];
            j--;
        }
        iv[j] = x;
    }
}

/* Sort iv[0..n) by start; scratch holds n more intervals. */
static void fo_sort_intervals(fo_interval *iv, fo_interval *scratch, fo_index n)
{
    const fo_index run = 16;
    for (fo_index lo = 0; lo < n; lo += run)
        fo_insertion_sort(iv + lo, n - lo < run ? n - lo : run);
    fo_interval *src = iv, *dst = scratch;
    for (fo_index width = run; width < n; width *= 2) {
        for (fo_index lo = 0; lo < n; lo += 2 * width) {
            fo_index mid = lo + width < n ? lo + width : n;
            fo_index hi = lo + 2 * width < n ? lo + 2 * width : n;
            fo_index a = lo, b = mid, k = lo;
            while (a < mid && b < hi) dst[k++] = src[b].start < src[a].start ? src[b++] : src[a++];
            while (a < mid) dst[k++] = src[a++];
            while (b < hi) dst[k++] = src[b++];
        }
        fo_interval *t = src; src = dst; dst = t;
    }
    if (src != iv) memcpy(iv, src, (size_t)n * sizeof(fo_interval));
}

int fo_find_overlap(fo_interval *iv, fo_interval *scratch, fo_index n, fo_index *first,
                    fo_index *second)
{
    fo_sort_intervals(iv, scratch, n);
    fo_index widest = 0;
    for (fo_index i = 1; i < n; i++) {
        if (iv[i].start < iv[widest].end) {
            *first = iv[widest].label;
            *second = iv[i].label;
            return 1;
        }
        if (iv[i].end > iv[widest].end) widest = i;
    }
    return 0;
}

# cython: language_level=3
"""A numpy memory handler that keeps the pages of freed large arrays for
the next ones: the optional fast path of mscope.analyzer.pages, which says
why and when it is used.

Arrays of at least ``LARGE`` bytes are anonymous mappings.  A freed one's
range of pages is kept (not unmapped) where every page of it is resident,
and serves the next large array that numpy does not ask to be zeroed: the
best fitting range, its head taken and its tail kept, or, where none is
big enough, the kept ranges moved side by side into a new mapping, the
largest first (mremap moves page tables; nothing is copied).  The fresh
pages of such an array are faulted in as it is made, in one pass in the
kernel rather than a fault per page as it is written.  Zeroed arrays
(calloc) get fresh pages only, which the kernel zeroes as they are first
written: np.zeros of a large array written sparsely stays small.

What is kept is bounded by the resident memory: before a new array's
fresh pages are written, kept ranges go (the smallest first) until the
process would not exceed the most it held since :func:`begin`, less what
was kept at the time.  The peak is then what it would be without the
cache, as far as the large arrays show it; memory that grows beside them
(Python objects, BLAS buffers) is seen every MiB of small numpy arrays and
at each large one, and :func:`release` lets everything go where the
caller knows the pages will not be asked for again soon.

Each block starts with a 16-byte header (its mapping's length, 0 for a
malloc'd block, and the size asked for), so a block is freed the way it
was made whatever size numpy says it had; data stays 16-byte aligned, as
malloc's is.  Smaller arrays go to malloc, as numpy's own handler sends
them.

Build in place: ``cd analyzer && cythonize -i -3 _pages.pyx``.
"""
from cpython.pycapsule cimport PyCapsule_GetPointer, PyCapsule_New

__all__ = ["install", "restore", "begin", "end", "release", "set_large", "stats", "LARGE"]

cdef extern from *:
    """
    #include <errno.h>
    #include <fcntl.h>
    #include <stdio.h>
    #include <pthread.h>
    #include <stdint.h>
    #include <stdlib.h>
    #include <string.h>
    #include <sys/mman.h>
    #include <unistd.h>

    /* numpy's PyDataMem_Handler, version 1 (numpy >= 1.22): declared here
     * so the build needs no numpy headers; numpy keeps this layout. */
    typedef struct {
        void *ctx;
        void *(*malloc)(void *ctx, size_t size);
        void *(*calloc)(void *ctx, size_t nelem, size_t elsize);
        void *(*realloc)(void *ctx, void *ptr, size_t new_size);
        void (*free)(void *ctx, void *ptr, size_t size);
    } mscope_allocator;
    typedef struct {
        char name[127];
        uint8_t version;
        mscope_allocator allocator;
    } mscope_handler;

    #define MSCOPE_HDR 16
    #define MSCOPE_LARGE ((size_t)1 << 20)
    #define MSCOPE_SLOTS 64

    typedef struct { char *p; size_t len; } mscope_range;

    static pthread_mutex_t mscope_lock = PTHREAD_MUTEX_INITIALIZER;
    static mscope_range mscope_kept[MSCOPE_SLOTS];
    static int mscope_nkept;
    static size_t mscope_kept_bytes, mscope_live, mscope_high;
    static long mscope_active;              /* begin() - end() */
    static size_t mscope_reused, mscope_fresh;  /* bytes, for stats() */
    static size_t mscope_page;
    static size_t mscope_large = MSCOPE_LARGE;   /* set_large() */
    static int mscope_statm = -1;

    static size_t mscope_round(size_t n) {
        return (n + mscope_page - 1) & ~(mscope_page - 1);
    }

    /* Resident bytes of the process now (0 if unknown); mscope_high is
     * the most seen since begin() less the pages kept at the time: what
     * kept pages must never push the process above. */
    static size_t mscope_rss(void) {
        char buf[128];
        unsigned long size, res;
        ssize_t n;
        if (mscope_statm < 0)
            mscope_statm = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
        if (mscope_statm < 0)
            return 0;
        n = pread(mscope_statm, buf, sizeof buf - 1, 0);
        if (n <= 0)
            return 0;
        buf[n] = 0;
        if (sscanf(buf, "%lu %lu", &size, &res) != 2)
            return 0;
        res *= mscope_page;
        /* the kept pages are not counted in the mark: it is what the
         * process would hold without them */
        if (res > mscope_kept_bytes && res - mscope_kept_bytes > mscope_high)
            mscope_high = res - mscope_kept_bytes;
        return res;
    }

    /* Whether [p, p + len) is (nearly) all resident: a range whose array
     * left pages untouched would fault them again, and would count as
     * freed memory it does not hold. */
    static size_t mscope_untouched;         /* bytes, for stats() */
    static int mscope_resident(char *p, size_t len) {
        unsigned char vec[4096];
        size_t pages = len / mscope_page, done = 0, in = 0;
        while (done < pages) {
            size_t k = pages - done < sizeof vec ? pages - done : sizeof vec;
            if (mincore(p + done * mscope_page, k * mscope_page, vec) != 0)
                return 0;
            for (size_t i = 0; i < k; i++)
                in += vec[i] & 1;
            done += k;
        }
        mscope_untouched += (pages - in) * mscope_page;
        return in == pages;
    }

    static void mscope_drop(int i) {
        munmap(mscope_kept[i].p, mscope_kept[i].len);
        mscope_kept_bytes -= mscope_kept[i].len;
        mscope_kept[i] = mscope_kept[--mscope_nkept];
    }

    static void mscope_drop_all(void) {
        while (mscope_nkept) mscope_drop(mscope_nkept - 1);
    }

    static int mscope_smallest(void) {
        int s = 0;
        for (int i = 1; i < mscope_nkept; i++)
            if (mscope_kept[i].len < mscope_kept[s].len) s = i;
        return s;
    }

    static void mscope_keep(char *p, size_t len) {
        if (mscope_nkept == MSCOPE_SLOTS) {       /* the smallest goes */
            int s = mscope_smallest();
            if (mscope_kept[s].len >= len) { munmap(p, len); return; }
            mscope_drop(s);
        }
        mscope_kept[mscope_nkept].p = p;
        mscope_kept[mscope_nkept++].len = len;
        mscope_kept_bytes += len;
    }

    /* The bound: `fresh` new bytes about to be written must not take the
     * resident memory above its high-water mark while pages are kept, so
     * kept ranges go (smallest first) until they would not.  The peak is
     * then what it would be without them. */
    static void mscope_bound(size_t fresh) {
        size_t rss = mscope_rss();
        while (mscope_nkept && rss + fresh > mscope_high) {
            int s = mscope_smallest();
            size_t len = mscope_kept[s].len;
            mscope_drop(s);
            rss = rss > len ? rss - len : 0;
        }
    }

    /* Small blocks come from malloc's heap, which grows too: every MiB of
     * them, the bound is kept as for a large one (bench/analyze.py's
     * threaded run: RSS growth 892 -> 887 MiB).  Counted without the lock,
     * which is taken only at the MiB. */
    static size_t mscope_small_since;
    static void mscope_small(size_t n) {
        if (mscope_active <= 0 ||
                __atomic_add_fetch(&mscope_small_since, n, __ATOMIC_RELAXED) < ((size_t)1 << 20))
            return;
        pthread_mutex_lock(&mscope_lock);
        if (mscope_small_since >= ((size_t)1 << 20)) {
            __atomic_store_n(&mscope_small_since, 0, __ATOMIC_RELAXED);
            mscope_bound(0);
        }
        pthread_mutex_unlock(&mscope_lock);
    }

    /* A mapping of `len` bytes (page multiple); *warm: how many of its
     * first bytes are kept pages (dirty), the rest fresh (zero). */
    static char *mscope_map(size_t len, size_t *warm, int zero) {
        char *p = NULL;
        *warm = 0;
        pthread_mutex_lock(&mscope_lock);
        if (mscope_active > 0 && mscope_nkept && !zero) {
            int best = -1;
            for (int i = 0; i < mscope_nkept; i++)
                if (mscope_kept[i].len >= len &&
                        (best < 0 || mscope_kept[i].len < mscope_kept[best].len))
                    best = i;
            if (best >= 0) {                     /* head taken, tail kept */
                mscope_range r = mscope_kept[best];
                mscope_kept[best] = mscope_kept[--mscope_nkept];
                mscope_kept_bytes -= r.len;
                if (r.len > len)
                    mscope_keep(r.p + len, r.len - len);
                p = r.p;
                *warm = len;
            } else if ((p = mmap(NULL, len, PROT_READ | PROT_WRITE,
                                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)) != MAP_FAILED) {
                /* none big enough: kept ranges moved into a new one, the
                 * largest first (page tables moved, nothing copied) */
                size_t off = 0;
                while (off < len && mscope_nkept) {
                    int k = 0;
                    for (int i = 1; i < mscope_nkept; i++)
                        if (mscope_kept[i].len > mscope_kept[k].len) k = i;
                    mscope_range r = mscope_kept[k];
                    size_t m = r.len < len - off ? r.len : len - off;
                    if (mremap(r.p, m, m, MREMAP_MAYMOVE | MREMAP_FIXED, p + off) == MAP_FAILED)
                        break;
                    mscope_kept_bytes -= m;
                    if (m < r.len) {
                        mscope_kept[k].p = r.p + m;
                        mscope_kept[k].len = r.len - m;
                    } else {
                        mscope_kept[k] = mscope_kept[--mscope_nkept];
                    }
                    off += m;
                }
                *warm = off;
            } else {
                p = NULL;
            }
        }
        /* Fresh pages an array will write are faulted in here, all at
         * once (MAP_POPULATE, MADV_POPULATE_WRITE): one pass in the
         * kernel instead of a fault per page as they are first written
         * (bench/analyze.py: system time 0.90 -> 0.71 s).  Not for zeroed
         * arrays, which may be written sparsely. */
        int populate = !zero && mscope_active > 0 && len > *warm;
        if (p == NULL) {
            /* nothing kept, zeroed, or the move's mapping failed */
            p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS |
                     (populate ? MAP_POPULATE : 0), -1, 0);
            if (p == MAP_FAILED) {
                pthread_mutex_unlock(&mscope_lock);
                return NULL;
            }
            populate = 0;
        }
        mscope_live += len;
        mscope_reused += *warm;
        mscope_fresh += len - *warm;
        mscope_bound(len - *warm);
        pthread_mutex_unlock(&mscope_lock);
    #ifdef MADV_POPULATE_WRITE
        if (populate)       /* EINVAL before Linux 5.14: faulted as written */
            madvise(p + *warm, len - *warm, MADV_POPULATE_WRITE);
    #endif
        return p;
    }

    static void mscope_unmap(char *p, size_t len) {
        pthread_mutex_lock(&mscope_lock);
        mscope_live -= len;
        /* outside a diagnosis nothing is kept: no residency pass */
        if (mscope_active > 0 && mscope_resident(p, len)) {
            mscope_rss();                        /* the high-water mark */
            mscope_keep(p, len);
        } else {
            munmap(p, len);
        }
        pthread_mutex_unlock(&mscope_lock);
    }

    static void *mscope_new(size_t size, int zero) {
        size_t total = size + MSCOPE_HDR, warm;
        char *b;
        if (total < size) { errno = ENOMEM; return NULL; }
        if (total < mscope_large) {
            b = zero ? calloc(1, total) : malloc(total);
            if (b == NULL) return NULL;
            mscope_small(total);
            ((size_t *)b)[0] = 0;
            ((size_t *)b)[1] = size;
            return b + MSCOPE_HDR;
        }
        total = mscope_round(total);
        b = mscope_map(total, &warm, zero);
        if (b == NULL) return NULL;
        ((size_t *)b)[0] = total;
        ((size_t *)b)[1] = size;
        return b + MSCOPE_HDR;
    }

    static void *mscope_malloc(void *ctx, size_t size) { return mscope_new(size, 0); }

    static void *mscope_calloc(void *ctx, size_t nelem, size_t elsize) {
        if (elsize && nelem > SIZE_MAX / elsize) { errno = ENOMEM; return NULL; }
        return mscope_new(nelem * elsize, 1);
    }

    static void mscope_free(void *ctx, void *ptr, size_t size) {
        char *b;
        if (ptr == NULL) return;
        b = (char *)ptr - MSCOPE_HDR;
        if (((size_t *)b)[0] == 0)
            free(b);
        else
            mscope_unmap(b, ((size_t *)b)[0]);
    }

    static void *mscope_realloc(void *ctx, void *ptr, size_t new_size) {
        char *b, *q;
        size_t len, total = new_size + MSCOPE_HDR;
        if (ptr == NULL) return mscope_new(new_size, 0);
        if (total < new_size) { errno = ENOMEM; return NULL; }
        b = (char *)ptr - MSCOPE_HDR;
        len = ((size_t *)b)[0];
        if (len == 0 && total < mscope_large) {
            q = realloc(b, total);
            if (q == NULL) return NULL;
            ((size_t *)q)[1] = new_size;
            return q + MSCOPE_HDR;
        }
        if (len != 0 && total >= mscope_large) {
            total = mscope_round(total);
            if (total == len) { ((size_t *)b)[1] = new_size; return ptr; }
            q = mremap(b, len, total, MREMAP_MAYMOVE);
            if (q == MAP_FAILED) return NULL;
            pthread_mutex_lock(&mscope_lock);
            mscope_live = mscope_live - len + total;
            if (total > len) {
                mscope_fresh += total - len;
                mscope_bound(total - len);
            }
            pthread_mutex_unlock(&mscope_lock);
            ((size_t *)q)[0] = total;
            ((size_t *)q)[1] = new_size;
            return q + MSCOPE_HDR;
        }
        /* small <-> large: a new block, the data copied */
        q = mscope_new(new_size, 0);
        if (q == NULL) return NULL;
        memcpy(q, ptr, ((size_t *)b)[1] < new_size ? ((size_t *)b)[1] : new_size);
        mscope_free(NULL, ptr, 0);
        return q;
    }

    static mscope_handler mscope_the_handler = {
        "mscope_kept_pages", 1,
        {NULL, mscope_malloc, mscope_calloc, mscope_realloc, mscope_free}
    };

    static void mscope_begin(void) {
        pthread_mutex_lock(&mscope_lock);
        if (mscope_active++ == 0) {
            mscope_high = 0;
            mscope_rss();
        }
        pthread_mutex_unlock(&mscope_lock);
    }

    /* The last end() lets every kept page go: arrays freed after it
     * (results still held) are unmapped as they would be without it. */
    static void mscope_end(void) {
        pthread_mutex_lock(&mscope_lock);
        if (mscope_active > 0 && --mscope_active == 0)
            mscope_drop_all();
        pthread_mutex_unlock(&mscope_lock);
    }

    static void mscope_release(void) {
        pthread_mutex_lock(&mscope_lock);
        mscope_drop_all();
        pthread_mutex_unlock(&mscope_lock);
    }

    static void mscope_init(void) {
        mscope_page = (size_t)sysconf(_SC_PAGESIZE);
    }

    static void mscope_stats(size_t out[6]) {
        pthread_mutex_lock(&mscope_lock);
        out[0] = mscope_kept_bytes; out[1] = mscope_live; out[2] = mscope_high;
        out[3] = mscope_reused; out[4] = mscope_fresh; out[5] = mscope_untouched;
        pthread_mutex_unlock(&mscope_lock);
    }
    """
    ctypedef struct mscope_handler:
        pass
    mscope_handler mscope_the_handler
    void mscope_begin() nogil
    void mscope_end() nogil
    void mscope_stats(size_t *out) nogil
    void mscope_init() nogil
    void mscope_release() nogil
    size_t MSCOPE_LARGE
    size_t mscope_large

LARGE = MSCOPE_LARGE
mscope_init()

ctypedef object (*set_handler_t)(object)

cdef set_handler_t _set_handler = NULL
cdef object _capsule = None

# numpy's C API table: PyDataMem_SetHandler is entry 304 (numpy >= 1.22)
cdef int _SET_HANDLER = 304


cdef set_handler_t _setter() except NULL:
    global _set_handler, _capsule
    if _set_handler == NULL:
        try:
            from numpy._core import _multiarray_umath as m
        except ImportError:
            from numpy.core import _multiarray_umath as m
        table = <void **>PyCapsule_GetPointer(m._ARRAY_API, NULL)
        _set_handler = <set_handler_t>table[_SET_HANDLER]
        _capsule = PyCapsule_New(<void *>&mscope_the_handler, b"mem_handler", NULL)
    return _set_handler


def install():
    """Make this handler numpy's in the current context (a context
    variable: threads started after run their tasks in a copy of it, see
    mscope.workers); returns the handler before, for :func:`restore`."""
    return _setter()(_capsule)


def restore(before):
    """Put back the handler :func:`install` returned."""
    _setter()(before)


def begin():
    """Keep freed ranges from now on (calls nest)."""
    mscope_begin()


def end():
    """The matching end of :func:`begin`: the last lets every kept range go."""
    mscope_end()


def set_large(size_t n):
    """Arrays of `n` bytes or more are mapped and their pages kept
    (default ``LARGE``); the size before.  Tests lower it so that a small
    diagnosis goes through the cache array after array."""
    global mscope_large
    before, mscope_large = mscope_large, max(n, <size_t>4096)
    return before


def release():
    """Let every kept range go now; ranges freed after are kept again."""
    mscope_release()


def stats():
    """Bytes: ``kept`` and ``live`` (large arrays held) now, ``high`` (the
    bound: the most resident since the outermost begin(), less what was
    kept then), and since the module loaded ``reused`` and ``fresh`` (large
    arrays served from kept pages and from new ones) and ``untouched``
    (pages of large arrays freed within a diagnosis and never written:
    not kept)."""
    cdef size_t out[6]
    mscope_stats(out)
    return {"kept": out[0], "live": out[1], "high": out[2], "reused": out[3],
            "fresh": out[4], "untouched": out[5]}

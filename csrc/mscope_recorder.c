/* SPDX-License-Identifier: BSD-3-Clause */
/* Ring file creation and the raw-id recorder (no DPDK needed). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mscope_pvt.h"

static int
valid_name(const char *s)
{
	size_t n = 0;

	if (s == NULL)
		return 0;
	for (; s[n] != '\0'; n++) {
		char c = s[n];
		if (n >= MSCOPE_NAME_LEN - 1)
			return 0;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '_' || c == '-'))
			return 0;
	}
	return n > 0;
}

static uint64_t
monotonic_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* The TSC rate against CLOCK_MONOTONIC over ~200 us: within a fraction of
 * a percent, all the idle-poll interval needs until mscope_set_tsc_hz
 * gives the exact one. */
static uint64_t
estimate_tsc_hz(void)
{
	const uint64_t t0 = monotonic_ns(), c0 = mscope_rdtsc();
	uint64_t t1, c1;

	do {
		t1 = monotonic_ns();
		c1 = mscope_rdtsc();
	} while (t1 - t0 < 200000);
	return (uint64_t)((double)(c1 - c0) * 1e9 / (double)(t1 - t0));
}

static uint64_t
idle_cycles(uint64_t hz, uint32_t idle_ns)
{
	return (uint64_t)((double)hz * idle_ns / 1e9);
}

/* The idle-poll interval: MSCOPE_IDLE_US microseconds where it is set to
 * 1..MSCOPE_IDLE_US_MAX, else MSCOPE_IDLE_NS.  A long quiet capture is
 * mostly idle-poll records (one per NF every 20 us: 80% of a 10-minute
 * one at 5 kpps); a coarser interval makes it smaller, at the cost of
 * not telling stops shorter than about twice it from polling.  A bad
 * value is said and the default kept: recording never fails an NF. */
static uint32_t
idle_interval_ns(void)
{
	const char *s = getenv("MSCOPE_IDLE_US");
	char *end;
	unsigned long us;

	if (s == NULL || s[0] == '\0')
		return MSCOPE_IDLE_NS;
	errno = 0;
	us = strtoul(s, &end, 10);
	if (errno != 0 || *end != '\0' || s[0] == '-' || us == 0 || us > MSCOPE_IDLE_US_MAX) {
		fprintf(stderr, "mscope: MSCOPE_IDLE_US=%s is not a number of us in 1..%u: "
			"idle polls every %u us\n", s, MSCOPE_IDLE_US_MAX, MSCOPE_IDLE_NS / 1000);
		return MSCOPE_IDLE_NS;
	}
	return (uint32_t)(us * 1000);
}

static int
ensure_dir(const char *dir)
{
	struct stat st;

	/* 0700: ring contents (packet ids, timing) are the operator's data. */
	if (mkdir(dir, 0700) == 0 || errno == EEXIST) {
		if (stat(dir, &st) != 0)
			return -errno;
		return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
	}
	return -errno;
}

struct mscope *
mscope_open(const struct mscope_params *p)
{
	struct mscope *ms;
	struct mscope_ring_hdr *hdr;
	const char *dir;
	char tmp[PATH_MAX];
	size_t data = MSCOPE_DEFAULT_RING_BYTES;
	void *map;
	int fd, rc;

	if (p == NULL || !valid_name(p->nf_name)) {
		errno = EINVAL;
		return NULL;
	}
	if (p->ring_bytes != 0)
		data = p->ring_bytes;
	if (data < MSCOPE_RING_MIN_DATA || data > MSCOPE_RING_MAX_DATA ||
	    (data & (data - 1)) != 0) {
		errno = EINVAL;
		return NULL;
	}
	dir = p->dir;
	if (dir == NULL)
		dir = getenv("MSCOPE_DIR");
	if (dir == NULL || dir[0] == '\0')
		dir = MSCOPE_DEFAULT_DIR;
	rc = ensure_dir(dir);
	if (rc < 0) {
		errno = -rc;
		return NULL;
	}

	ms = calloc(1, sizeof(*ms));
	if (ms == NULL)
		return NULL;
	if (snprintf(ms->path, sizeof(ms->path), "%s/%s.%u.%d.ring", dir,
		     p->nf_name, p->lcore, (int)getpid()) >= (int)sizeof(ms->path) ||
	    snprintf(tmp, sizeof(tmp), "%s/.%s.%u.%d.tmp", dir, p->nf_name,
		     p->lcore, (int)getpid()) >= (int)sizeof(tmp)) {
		free(ms);
		errno = ENAMETOOLONG;
		return NULL;
	}
	if (access(ms->path, F_OK) == 0) {
		free(ms);
		errno = EEXIST;
		return NULL;
	}
	unlink(tmp); /* a leftover of our own pid: a crashed earlier open */
	fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		goto fail;
	ms->map_len = MSCOPE_RING_HDR_SIZE + data;
	if (ftruncate(fd, (off_t)ms->map_len) != 0) {
		close(fd);
		goto fail_unlink;
	}
	map = mmap(NULL, ms->map_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (map == MAP_FAILED)
		goto fail_unlink;
	/* Touch every page now so the fast path never takes a page fault. */
	memset(map, 0, ms->map_len);

	hdr = map;
	hdr->version = MSCOPE_RING_VERSION;
	hdr->hdr_size = MSCOPE_RING_HDR_SIZE;
	hdr->data_size = data;
	hdr->pid = (int32_t)getpid();
	hdr->nf_id = p->nf_id;
	hdr->lcore = p->lcore;
	hdr->created_tsc = mscope_rdtsc();
	hdr->created_ns = monotonic_ns();
	ms->idle_ns = (p->flags & MSCOPE_F_NOIDLE) ? 0 : idle_interval_ns();
	hdr->idle_ns = ms->idle_ns;
	hdr->state = MSCOPE_RING_OPEN;
	strncpy(hdr->nf_name, p->nf_name, MSCOPE_NAME_LEN - 1);
	/* Release pairs with the reader's acquire-load of magic: a reader that
	 * sees the magic sees the whole identity line. */
	__atomic_store_n(&hdr->magic, MSCOPE_RING_MAGIC, __ATOMIC_RELEASE);
	/* rename() publishes the file whole: a scanning collector never finds
	 * a half-initialised ring under a *.ring name. */
	if (rename(tmp, ms->path) != 0) {
		rc = errno;
		munmap(map, ms->map_len);
		unlink(tmp);
		free(ms);
		errno = rc;
		return NULL;
	}

	ms->prod.hdr = hdr;
	ms->prod.data = (uint8_t *)map + MSCOPE_RING_HDR_SIZE;
	ms->prod.mask = data - 1;
	ms->prod.nf_id = p->nf_id;
	if (!(p->flags & MSCOPE_F_NOIDLE)) {
		ms->prod.idle_tsc = idle_cycles(estimate_tsc_hz(), ms->idle_ns);
		ms->prod.last_tsc = mscope_rdtsc();
	}
	ms->flags = p->flags;
	ms->lcore = p->lcore;
	return ms;

fail_unlink:
	rc = errno;
	unlink(tmp);
	errno = rc;
fail:
	rc = errno;
	free(ms);
	errno = rc;
	return NULL;
}

void
mscope_set_tsc_hz(struct mscope *ms, uint64_t hz)
{
	if (ms == NULL)
		return;
	__atomic_store_n(&ms->prod.hdr->tsc_hz, hz, __ATOMIC_RELAXED);
	if (hz != 0 && !(ms->flags & MSCOPE_F_NOIDLE))
		ms->prod.idle_tsc = idle_cycles(hz, ms->idle_ns);
}

int
mscope_close(struct mscope *ms)
{
	int rc = 0;

	if (ms == NULL)
		return -EINVAL;
	/* Release: the reader that sees CLOSED has seen every record before it. */
	__atomic_store_n(&ms->prod.hdr->state, MSCOPE_RING_CLOSED, __ATOMIC_RELEASE);
	if (munmap(ms->prod.hdr, ms->map_len) != 0)
		rc = -errno;
	free(ms);
	return rc;
}

const char *
mscope_ring_path(const struct mscope *ms)
{
	return ms != NULL ? ms->path : NULL;
}

int
mscope_record_ids(struct mscope *ms, uint8_t dir, uint16_t port,
		  uint16_t queue, const uint64_t *ids, uint32_t n,
		  uint32_t occupancy)
{
	const uint64_t tsc = mscope_rdtsc();
	uint8_t flags = dir & MSCOPE_REC_F_TX;
	int rc = 0;

	if (unlikely(ms == NULL))
		return -EINVAL;
	if (n == 0)  /* an empty poll: an idle-poll record at most per interval */
		return flags ? 0 : mscope_ring_idle(&ms->prod, port, queue, occupancy, tsc);
	while (unlikely(n > MSCOPE_MAX_BATCH)) {
		if (mscope_ring_write(&ms->prod, flags, port, queue, occupancy,
				      tsc, ids, MSCOPE_MAX_BATCH) != 0)
			rc = -ENOBUFS;
		ids += MSCOPE_MAX_BATCH;
		n -= MSCOPE_MAX_BATCH;
	}
	if (mscope_ring_write(&ms->prod, flags, port, queue, occupancy, tsc,
			      ids, n) != 0)
		rc = -ENOBUFS;
	return rc;
}

/* Apart from mscope_record_ids, which keeps its one-record fast path:
 * the ingress NF pays for the second record, no one else does. */
int
mscope_rx_ids_addrs(struct mscope *ms, uint16_t port, uint16_t queue,
		    const uint64_t *ids, const uint64_t *addrs, uint32_t n,
		    uint32_t occupancy)
{
	const uint64_t tsc = mscope_rdtsc();
	int rc = 0;

	if (unlikely(ms == NULL))
		return -EINVAL;
	if (n == 0)
		return mscope_ring_idle(&ms->prod, port, queue, occupancy, tsc);
	while (n > 0) {
		const uint32_t k = n < MSCOPE_MAX_BATCH ? n : MSCOPE_MAX_BATCH;

		/* No address record after a dropped rx record: it would name
		 * packets the capture does not have. */
		if (mscope_ring_write(&ms->prod, 0, port, queue, occupancy, tsc,
				      ids, k) != 0 ||
		    mscope_ring_write(&ms->prod, MSCOPE_REC_F_ADDR, port, queue,
				      occupancy, tsc, addrs, k) != 0)
			rc = -ENOBUFS;
		ids += k;
		addrs += k;
		n -= k;
	}
	return rc;
}

int
mscope_refused(struct mscope *ms, uint16_t port, uint16_t queue,
	       uint64_t packets, uint64_t window_ns, uint32_t occupancy)
{
	uint64_t *slot;

	if (unlikely(ms == NULL))
		return -EINVAL;
	if (packets == 0)
		return 0;
	slot = mscope_ring_reserve(&ms->prod, 2);
	if (slot == NULL) {
		mscope_ring_drop(&ms->prod, 0);
		return -ENOBUFS;
	}
	slot[0] = packets;
	slot[1] = window_ns;
	mscope_ring_commit(&ms->prod, MSCOPE_REC_F_REFUSED, port, queue, occupancy,
			   mscope_rdtsc());
	return 0;
}

void
mscope_get_stats(const struct mscope *ms, struct mscope_stats *st)
{
	st->records = ms->prod.seq - ms->prod.drop_records;
	st->drop_records = ms->prod.drop_records;
	st->drop_packets = ms->prod.drop_packets;
}

/* SPDX-License-Identifier: BSD-3-Clause */
/* The recorder handle, shared by mscope_recorder.c and mscope_dpdk.c only. */
#ifndef MSCOPE_PVT_H
#define MSCOPE_PVT_H

#include <limits.h>
#include "mscope.h"
#include "mscope_ring.h"

struct mscope {
	struct mscope_producer prod;  /* first: the hot fields */
	uint32_t flags;
	uint32_t idle_ns;             /* idle-poll interval (MSCOPE_IDLE_US); 0: none */
	uint16_t lcore;
	size_t map_len;
	char path[PATH_MAX];
};

#endif /* MSCOPE_PVT_H */

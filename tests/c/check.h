/* SPDX-License-Identifier: BSD-3-Clause */
/* CHECK(): count a check, report a failure with its location and go on, so
 * one run shows every failing check.  main() ends with CHECK_SUMMARY(). */
#ifndef MSCOPE_TEST_CHECK_H
#define MSCOPE_TEST_CHECK_H

#include <stdio.h>

static int failures, checks;

#define CHECK(cond, ...) do {						\
	checks++;							\
	if (!(cond)) {							\
		failures++;						\
		fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
		fprintf(stderr, __VA_ARGS__);				\
		fputc('\n', stderr);					\
	}								\
} while (0)

/* The exit status: 0 when every check passed. */
#define CHECK_SUMMARY() \
	(printf("%d checks, %d failed\n", checks, failures), failures != 0)

#endif /* MSCOPE_TEST_CHECK_H */

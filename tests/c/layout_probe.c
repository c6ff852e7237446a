/* Prints the record and ring layout as the C compiler sees it, for
 * tests/test_layout.py to hold src/mscope/record.py to. */
#include <stddef.h>
#include <stdio.h>
#include "mscope_record.h"

#define F(s, f) printf("%s %s %zu %zu\n", #s, #f, offsetof(struct s, f), \
		       sizeof(((struct s *)0)->f))
#define C(name) printf("const %s %llu\n", #name, (unsigned long long)(name))

int
main(void)
{
	F(mscope_rec_hdr, magic); F(mscope_rec_hdr, version); F(mscope_rec_hdr, flags);
	F(mscope_rec_hdr, nf_id); F(mscope_rec_hdr, port); F(mscope_rec_hdr, queue);
	F(mscope_rec_hdr, count); F(mscope_rec_hdr, occupancy); F(mscope_rec_hdr, tsc);
	F(mscope_rec_hdr, seq);
	C(MSCOPE_REC_MAGIC); C(MSCOPE_REC_VERSION); C(MSCOPE_REC_F_TX); C(MSCOPE_REC_F_ADDR);
	C(MSCOPE_REC_F_NOIDS); C(MSCOPE_REC_F_REFUSED); C(MSCOPE_REC_F_PAD); C(MSCOPE_REC_HDR_SIZE);
	C(MSCOPE_OCC_UNKNOWN); C(MSCOPE_MAX_BATCH); C(MSCOPE_REFUSED_NS); C(MSCOPE_RING_MAGIC);
	C(MSCOPE_RING_VERSION); C(MSCOPE_RING_HDR_SIZE); C(MSCOPE_RING_MIN_DATA);
	printf("const REC_HDR_SIZEOF %zu\n", sizeof(struct mscope_rec_hdr));
	return 0;
}

/* libpno_copy: see pno_copy.h. */
#include "pno_copy.h"

#include <string.h>

void pno_copy(void *dst, uint32_t dst_off, const void *src, uint32_t src_off, uint32_t len)
{
	memcpy((char *)dst + dst_off, (const char *)src + src_off, len);
}

void pno_copy_from_ring(void *dst, uint32_t dst_off, const void *ring, uint32_t cap,
                        uint32_t pos, uint32_t len)
{
	uint32_t at = pos & (cap - 1);
	uint32_t first = cap - at < len ? cap - at : len;
	memcpy((char *)dst + dst_off, (const char *)ring + at, first);
	if (len > first)
		memcpy((char *)dst + dst_off + first, ring, len - first);
}

void pno_copy_to_ring(void *ring, uint32_t cap, uint32_t pos, const void *src, uint32_t src_off,
                      uint32_t len)
{
	uint32_t at = pos & (cap - 1);
	uint32_t first = cap - at < len ? cap - at : len;
	memcpy((char *)ring + at, (const char *)src + src_off, first);
	if (len > first)
		memcpy(ring, (const char *)src + src_off + first, len - first);
}

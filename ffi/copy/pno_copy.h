/*
 * libpno_copy: memcpy between (base + offset) pairs, for the rings' copies between native
 * memory areas (the mapped region, the DPDK mbuf pool), called from TypeScript as an FFI fast
 * call with base pointers cached once: no view, no allocation per copy.
 *
 * The caller checks every bound; this library trusts its arguments.
 */
#ifndef PNO_COPY_H
#define PNO_COPY_H

#include <stdint.h>

/* Copies len bytes from src + src_off to dst + dst_off (the areas do not overlap). */
void pno_copy(void *dst, uint32_t dst_off, const void *src, uint32_t src_off, uint32_t len);

/* Copies len bytes, wrapping: the source is a ring of cap bytes (a power of two) at src. */
void pno_copy_from_ring(void *dst, uint32_t dst_off, const void *ring, uint32_t cap,
                        uint32_t pos, uint32_t len);

/* Copies len bytes into a ring of cap bytes (a power of two) at ring, starting at pos. */
void pno_copy_to_ring(void *ring, uint32_t cap, uint32_t pos, const void *src, uint32_t src_off,
                      uint32_t len);

#endif

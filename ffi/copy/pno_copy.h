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

/*
 * The Internet checksum (RFC 1071): adds len bytes of buf + off, taken as big-endian 16-bit
 * words starting on an even byte (an odd last byte is padded with zero), to the running sum
 * `sum`; returns the sum folded to 16 bits (0 only if both were 0). The caller complements it.
 */
uint32_t pno_csum(uint32_t sum, const uint8_t *buf, uint32_t off, uint32_t len);

/*
 * pno_copy_from_ring, and the checksum of the bytes copied (as pno_csum(0, ...) over the copy)
 * computed in the same pass: a TCP segment's payload leaves the send ring summed.
 */
uint32_t pno_copy_from_ring_csum(uint8_t *dst, uint32_t dst_off, const uint8_t *ring,
                                 uint32_t cap, uint32_t pos, uint32_t len);

/*
 * pno_copy_to_ring, and in the same pass the checksum of the head bytes before src + src_off
 * (an even count: a TCP header, summed but not copied) and of the len bytes copied, as
 * pno_csum(0, src, src_off - head, head + len): a received TCP segment's payload enters the
 * receive ring's free space with the segment summed, to be published only if it verifies.
 */
uint32_t pno_copy_to_ring_csum(uint8_t *ring, uint32_t cap, uint32_t pos, const uint8_t *src,
                               uint32_t src_off, uint32_t len, uint32_t head);

#endif

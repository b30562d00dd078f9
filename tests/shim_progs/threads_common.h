/*
 * What the threads program (threads_shared_epoll.c) and its peer (threads_peer.c) agree on:
 * the connections, their requests and responses, and the byte pattern of every body.
 *
 * Connection i (0..TC_CONNS-1) carries rounds(i) request/response exchanges. A request is a
 * 16-byte header (conn id, round, request body size, response body size, little-endian u32)
 * and its body; the response a 16-byte header (conn id, round, response body size, FNV-1a of
 * the request body as the server read it) and its body. Bodies are windows of one fixed
 * pseudo-random table (tc_pat), at an offset derived from (conn, round, direction): a byte
 * out of place, lost, doubled or from another connection fails the check.
 */
#ifndef PNO_THREADS_COMMON_H
#define PNO_THREADS_COMMON_H

#include <stdint.h>
#include <string.h>

#define TC_CONNS 1000
#define TC_THREADS 8
/* Not a power of two: windows wrap at ever different places. */
#define TC_PATLEN 1048573u
#define TC_HDR 16

static uint8_t tc_pat[TC_PATLEN];

static inline void tc_pattern_init(void) {
  uint32_t x = 2463534242u;
  for (uint32_t i = 0; i < TC_PATLEN; i++) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    tc_pat[i] = (uint8_t)(x >> 11);
  }
}

static inline uint32_t tc_rounds(uint32_t i) { return 1 + i % 3; }

/* Request body sizes: mostly small, some 64 KiB, a few over 256 KiB. */
static inline uint32_t tc_req_size(uint32_t i, uint32_t r) {
  static const uint32_t sizes[] = {1, 10, 200, 1500, 4096, 9000, 65536, 0};
  if (i % 101 == r) return 270000 + i;
  return sizes[(i * 31 + r * 7) % 8];
}

/* Response body sizes: the same spread, and 300 KiB+ for every 89th connection. */
static inline uint32_t tc_resp_size(uint32_t i, uint32_t r) {
  static const uint32_t sizes[] = {1, 64, 1000, 5000, 16384, 40000, 131072, 0};
  if (i % 89 == 0) return 300000 + 1000 * r + i;
  if (i == 500 && r == 2) return 2u << 20;
  return sizes[(i * 17 + r * 13) % 8];
}

/* Where in tc_pat a body starts: dir 0 request, 1 response. */
static inline uint32_t tc_offset(uint32_t i, uint32_t r, uint32_t dir) {
  return (uint32_t)(((uint64_t)i * 7919u + (uint64_t)r * 104729u + dir * 524287u) % TC_PATLEN);
}

/* Byte k of the body that starts at offset off. */
static inline uint8_t tc_byte(uint32_t off, uint64_t k) {
  return tc_pat[(off + k) % TC_PATLEN];
}

static inline uint32_t tc_fnv(uint32_t h, const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
  return h;
}

#define TC_FNV_INIT 2166136261u

static inline void tc_put32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
  p[2] = (uint8_t)(v >> 16);
  p[3] = (uint8_t)(v >> 24);
}

static inline uint32_t tc_get32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Counts of bytes that differ from the pattern. */
static inline uint64_t tc_check(uint32_t off, uint64_t at, const uint8_t *p, size_t n) {
  uint64_t bad = 0;
  for (size_t i = 0; i < n; i++) bad += p[i] != tc_byte(off, at + i);
  return bad;
}

/* The close-race scenario's rounds. */
#define TC_RACE_ROUNDS 100

#endif

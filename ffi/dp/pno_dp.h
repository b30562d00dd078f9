/* libpno_dp: the bridge's DPDK data plane. The typed dlopen table is ffi/dp.ts. */
#ifndef PNO_DP_H
#define PNO_DP_H
#include <stdint.h>

#define PNO_DP_BURST 64
#define PNO_DP_MAX_QUEUES 8 /* a power of two: queue ids are masked with it */

const char *pno_dp_last_error(void);
int pno_dp_eal_init(const char *args, uint32_t len);
int pno_dp_pool_create(uint32_t n_mbufs);
void *pno_dp_pool_base(void);
uint64_t pno_dp_pool_size(void);
uint32_t pno_dp_frame_room(void);
int pno_dp_port_by_name(const char *name);
int pno_dp_port_start(uint16_t port, uint16_t n_queues, uint16_t ring_size);
void *pno_dp_rx_meta(uint16_t queue);
void *pno_dp_tx_meta(uint16_t queue);
uint32_t pno_dp_rx_burst(uint16_t port, uint16_t queue);
uint32_t pno_dp_tx_reserve(uint16_t queue, uint32_t want);
uint32_t pno_dp_tx_flush(uint16_t port, uint16_t queue, uint32_t count);
int pno_dp_stats(uint16_t port, uint64_t *out);
int pno_dp_mac(uint16_t port, uint8_t *out);
int pno_dp_link(uint16_t port, uint32_t *out);
int pno_dp_shutdown(uint16_t port);

/* Waking on the wire (net_af_packet has no RX interrupt): see pno_dp.c. */
#define PNO_DP_WOKE_WIRE 1 /* a frame arrived */
#define PNO_DP_WOKE_KICK 2 /* the eventfd was written */
int pno_dp_rx_intr_probe(uint16_t port, uint16_t queue);
int pno_dp_wake_open(const char *ifname);
int pno_dp_rx_wake_fd(uint16_t queue);
int pno_dp_wake_arm(int fd, int armed);
void pno_dp_wake_drain(int fd);
int pno_dp_wait(int wake_fd, int event_fd, int timeout_ms);

#endif

/*
 * libpno_dp: the DPDK data plane of the PnO bridge, as small as it can be.
 *
 * Everything that can live in TypeScript does; this file only does what needs DPDK's inline
 * functions and structs: EAL init, one mbuf pool, port setup, and rx/tx bursts. Frames are
 * never copied here: the pool is one virtually contiguous area that TypeScript views as a
 * single ArrayBuffer, and bursts exchange (offset, length) pairs into it through per-queue
 * metadata arrays that TypeScript also views directly. Each function reports failure with a
 * negative value and leaves a message naming the failing step in pno_dp_last_error().
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <linux/filter.h>
#include <linux/if_packet.h>
#include <linux/if_xdp.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

#include "pno_dp.h"

struct pno_dp_queue {
	/* Frames handed to TypeScript by the last rx burst; freed at the next one. */
	struct rte_mbuf *rx[PNO_DP_BURST];
	uint16_t rx_count;
	/* Mbufs reserved for TypeScript to fill; slots [0, tx_reserved) are valid. */
	struct rte_mbuf *tx[PNO_DP_BURST];
	uint16_t tx_reserved;
	/* (offset into the pool area, length) per frame, viewed by TypeScript. */
	uint32_t rx_meta[PNO_DP_BURST * 2];
	uint32_t tx_meta[PNO_DP_BURST * 2];
	/* Frames the driver did not take at flush time. */
	uint64_t tx_dropped;
} __rte_cache_aligned;

static struct rte_mempool *pool;
static uintptr_t pool_base;
static size_t pool_size;
static struct pno_dp_queue queues[PNO_DP_MAX_QUEUES];
static char last_error[256];
/* Each queue's AF_XDP socket when the port is net_af_xdp (-1 otherwise, set at port start):
 * see pno_dp_rx_wake_fd. */
static int xsk_fds[PNO_DP_MAX_QUEUES];

static int fail(int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(last_error, sizeof(last_error), fmt, ap);
	va_end(ap);
	return code;
}

const char *pno_dp_last_error(void)
{
	return last_error;
}

int pno_dp_eal_init(const char *args, uint32_t len)
{
	/* args holds NUL-terminated strings back to back: argv[0] first. */
	static char copy[4096];
	char *argv[64];
	int argc = 0;
	if (len == 0 || len > sizeof(copy))
		return fail(-1, "eal init: argument block of %u bytes (1..%zu allowed)", len,
			    sizeof(copy));
	memcpy(copy, args, len);
	copy[len - 1] = '\0';
	for (uint32_t i = 0; i < len && argc < 63; i += strlen(copy + i) + 1)
		argv[argc++] = copy + i;
	argv[argc] = NULL;
	int ret = rte_eal_init(argc, argv);
	if (ret < 0)
		return fail(-1, "rte_eal_init: %s", rte_strerror(rte_errno));
	return ret;
}

static void note_chunk(struct rte_mempool *mp, void *opaque, struct rte_mempool_memhdr *memhdr,
		       unsigned mem_idx)
{
	(void)mp;
	(void)mem_idx;
	unsigned *chunks = opaque;
	if ((*chunks)++ == 0) {
		pool_base = (uintptr_t)memhdr->addr;
		pool_size = memhdr->len;
	}
}

int pno_dp_pool_create(uint32_t n_mbufs)
{
	pool = rte_pktmbuf_pool_create("pno_pool", n_mbufs, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
				       rte_socket_id());
	if (pool == NULL)
		return fail(-1, "rte_pktmbuf_pool_create(%u mbufs): %s", n_mbufs,
			    rte_strerror(rte_errno));
	unsigned chunks = 0;
	rte_mempool_mem_iter(pool, note_chunk, &chunks);
	/* One chunk is what lets TypeScript address every mbuf with an offset into one view. */
	if (chunks != 1)
		return fail(-1, "mbuf pool spans %u memory chunks; one contiguous chunk is needed",
			    chunks);
	return 0;
}

void *pno_dp_pool_base(void)
{
	return (void *)pool_base;
}

uint64_t pno_dp_pool_size(void)
{
	return pool_size;
}

uint32_t pno_dp_frame_room(void)
{
	return RTE_MBUF_DEFAULT_BUF_SIZE - RTE_PKTMBUF_HEADROOM;
}

int pno_dp_port_by_name(const char *name)
{
	uint16_t port;
	if (rte_eth_dev_get_port_by_name(name, &port) != 0)
		return fail(-1, "no DPDK port named %s", name);
	return port;
}

/*
 * net_af_xdp creates one AF_XDP socket per RX queue in rte_eth_rx_queue_setup and keeps it to
 * itself; DPDK has no call that names it. That socket is what an RX interrupt is to a NIC: it
 * turns readable (poll: POLLIN) when its RX ring holds a frame. So port start notes which
 * AF_XDP socket each queue's setup opened, by listing the process's descriptors before and
 * after (the kernel's SO_DOMAIN tells an AF_XDP socket from any other).
 */
#ifndef AF_XDP
#define AF_XDP 44
#endif
#define XSK_SCAN_MAX 64

static int xdp_sockets(int *out)
{
	int n = 0;
	DIR *dir = opendir("/proc/self/fd");
	if (dir == NULL)
		return 0;
	struct dirent *entry;
	while ((entry = readdir(dir)) != NULL && n < XSK_SCAN_MAX) {
		if (entry->d_name[0] < '0' || entry->d_name[0] > '9')
			continue;
		int fd = atoi(entry->d_name), domain = 0;
		socklen_t len = sizeof(domain);
		if (fd != dirfd(dir) &&
		    getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 && domain == AF_XDP)
			out[n++] = fd;
	}
	closedir(dir);
	return n;
}

/* The one AF_XDP socket that is open now and was not among `before`, or -1. */
static int new_xdp_socket(const int *before, int n_before)
{
	int now[XSK_SCAN_MAX], n_now = xdp_sockets(now), found = -1;
	for (int i = 0; i < n_now; i++) {
		int seen = 0;
		for (int j = 0; j < n_before && !seen; j++)
			seen = now[i] == before[j];
		if (seen)
			continue;
		if (found >= 0)
			return -1; /* two new sockets: which is this queue's is unknown */
		found = now[i];
	}
	return found;
}

int pno_dp_rx_wake_fd(uint16_t queue)
{
	if (queue >= PNO_DP_MAX_QUEUES || xsk_fds[queue] < 0)
		return fail(-1, "queue %u has no AF_XDP socket to wait on", queue);
	return xsk_fds[queue];
}

/*
 * net_af_xdp loads its XDP program through libbpf and libxdp, which print to stderr: warnings
 * about sections of the program's ELF they skip, and that /sys/fs/bpf is not mounted (libxdp
 * then loads the program alone, without its dispatcher). None of it is the bridge's to show, but
 * when the port fails to start the last message is often the reason, so it is kept for the error.
 */
typedef int (*bpf_print_fn)(int level, const char *format, va_list args);
typedef bpf_print_fn (*bpf_set_print_fn)(bpf_print_fn fn);
static char bpf_message[160];

static int keep_bpf_message(int level, const char *format, va_list args)
{
	(void)level;
	vsnprintf(bpf_message, sizeof(bpf_message), format, args);
	size_t len = strlen(bpf_message);
	while (len > 0 && (bpf_message[len - 1] == '\n' || bpf_message[len - 1] == ' '))
		bpf_message[--len] = '\0';
	return 0;
}

/* Both libraries are loaded already (the PMD needs them) or not at all (another driver). */
static void capture_bpf_messages(void)
{
	static const char *const libs[][2] = {{"libbpf.so.1", "libbpf_set_print"},
					      {"libxdp.so.1", "libxdp_set_print"}};
	for (size_t i = 0; i < sizeof(libs) / sizeof(libs[0]); i++) {
		void *lib = dlopen(libs[i][0], RTLD_NOW | RTLD_NOLOAD);
		if (lib == NULL)
			continue;
		bpf_set_print_fn set_print = (bpf_set_print_fn)dlsym(lib, libs[i][1]);
		if (set_print != NULL)
			set_print(keep_bpf_message);
		dlclose(lib);
	}
}

/* fail(), with libbpf's or libxdp's last word when there is one. */
#define fail_bpf(code, fmt, ...)                                                                   \
	(bpf_message[0] != '\0' ? fail(code, fmt " (%s)", __VA_ARGS__, bpf_message)                \
				: fail(code, fmt, __VA_ARGS__))

int pno_dp_port_start(uint16_t port, uint16_t n_queues, uint16_t ring_size)
{
	struct rte_eth_conf conf;
	struct rte_eth_dev_info info;
	int ret;

	if (pool == NULL)
		return fail(-1, "port %u start: create the mbuf pool first", port);
	if (n_queues == 0 || n_queues > PNO_DP_MAX_QUEUES)
		return fail(-1, "port %u start: %u queues (1..%u allowed)", port, n_queues,
			    PNO_DP_MAX_QUEUES);
	ret = rte_eth_dev_info_get(port, &info);
	if (ret != 0)
		return fail(ret, "rte_eth_dev_info_get(port %u): %s", port, rte_strerror(-ret));
	if (n_queues > info.max_rx_queues || n_queues > info.max_tx_queues)
		return fail(-1, "port %u has %u rx / %u tx queues; %u asked", port,
			    info.max_rx_queues, info.max_tx_queues, n_queues);
	/* Only net_af_xdp has sockets to note; other drivers' setups skip the fd listings. */
	int af_xdp = strcmp(info.driver_name, "net_af_xdp") == 0;
	for (int q = 0; q < PNO_DP_MAX_QUEUES; q++)
		xsk_fds[q] = -1;
	capture_bpf_messages();
	bpf_message[0] = '\0';
	memset(&conf, 0, sizeof(conf));
	ret = rte_eth_dev_configure(port, n_queues, n_queues, &conf);
	if (ret != 0)
		return fail_bpf(ret, "rte_eth_dev_configure(port %u): %s", port, rte_strerror(-ret));
	uint16_t nb_rxd = ring_size, nb_txd = ring_size;
	ret = rte_eth_dev_adjust_nb_rx_tx_desc(port, &nb_rxd, &nb_txd);
	if (ret != 0)
		return fail(ret, "rte_eth_dev_adjust_nb_rx_tx_desc(port %u): %s", port,
			    rte_strerror(-ret));
	for (uint16_t q = 0; q < n_queues; q++) {
		int before[XSK_SCAN_MAX], n_before = af_xdp ? xdp_sockets(before) : 0;
		ret = rte_eth_rx_queue_setup(port, q, nb_rxd, rte_eth_dev_socket_id(port), NULL,
					     pool);
		if (ret != 0)
			return fail_bpf(ret, "rte_eth_rx_queue_setup(port %u, queue %u): %s", port, q,
				    rte_strerror(-ret));
		if (af_xdp)
			xsk_fds[q] = new_xdp_socket(before, n_before);
		ret = rte_eth_tx_queue_setup(port, q, nb_txd, rte_eth_dev_socket_id(port), NULL);
		if (ret != 0)
			return fail(ret, "rte_eth_tx_queue_setup(port %u, queue %u): %s", port, q,
				    rte_strerror(-ret));
	}
	ret = rte_eth_dev_start(port);
	if (ret != 0)
		return fail_bpf(ret, "rte_eth_dev_start(port %u): %s", port, rte_strerror(-ret));
	ret = rte_eth_promiscuous_disable(port);
	if (ret != 0 && ret != -ENOTSUP)
		return fail(ret, "rte_eth_promiscuous_disable(port %u): %s", port,
			    rte_strerror(-ret));
	return 0;
}

void *pno_dp_rx_meta(uint16_t queue)
{
	return queue < PNO_DP_MAX_QUEUES ? queues[queue].rx_meta : NULL;
}

void *pno_dp_tx_meta(uint16_t queue)
{
	return queue < PNO_DP_MAX_QUEUES ? queues[queue].tx_meta : NULL;
}

static inline uint32_t data_offset(const struct rte_mbuf *m)
{
	return (uint32_t)((uintptr_t)m->buf_addr + m->data_off - pool_base);
}

uint32_t pno_dp_rx_burst(uint16_t port, uint16_t queue)
{
	struct pno_dp_queue *q = &queues[queue & (PNO_DP_MAX_QUEUES - 1)];
	if (q->rx_count != 0) {
		rte_pktmbuf_free_bulk(q->rx, q->rx_count);
		q->rx_count = 0;
	}
	uint16_t n = rte_eth_rx_burst(port, queue, q->rx, PNO_DP_BURST);
	for (uint16_t i = 0; i < n; i++) {
		struct rte_mbuf *m = q->rx[i];
		/* Chained mbufs would not be one contiguous view: hand over the first segment only
		 * with its real length, so the parser sees a truncated frame and drops it. */
		q->rx_meta[2 * i] = data_offset(m);
		q->rx_meta[2 * i + 1] = m->nb_segs == 1 ? m->data_len : 0;
	}
	q->rx_count = n;
	return n;
}

uint32_t pno_dp_tx_reserve(uint16_t queue, uint32_t want)
{
	struct pno_dp_queue *q = &queues[queue & (PNO_DP_MAX_QUEUES - 1)];
	if (want > PNO_DP_BURST)
		want = PNO_DP_BURST;
	if (q->tx_reserved < want) {
		uint16_t more = want - q->tx_reserved;
		if (rte_pktmbuf_alloc_bulk(pool, q->tx + q->tx_reserved, more) == 0) {
			for (uint16_t i = q->tx_reserved; i < want; i++) {
				q->tx_meta[2 * i] = data_offset(q->tx[i]);
				q->tx_meta[2 * i + 1] = 0;
			}
			q->tx_reserved = want;
		}
	}
	return q->tx_reserved;
}

uint32_t pno_dp_tx_flush(uint16_t port, uint16_t queue, uint32_t count)
{
	struct pno_dp_queue *q = &queues[queue & (PNO_DP_MAX_QUEUES - 1)];
	if (count > q->tx_reserved)
		count = q->tx_reserved;
	uint32_t room = pno_dp_frame_room();
	for (uint32_t i = 0; i < count; i++) {
		uint32_t len = q->tx_meta[2 * i + 1];
		struct rte_mbuf *m = q->tx[i];
		m->data_len = (uint16_t)(len > room ? room : len);
		m->pkt_len = m->data_len;
	}
	uint16_t sent = count ? rte_eth_tx_burst(port, queue, q->tx, (uint16_t)count) : 0;
	if (sent < count) {
		rte_pktmbuf_free_bulk(q->tx + sent, count - sent);
		q->tx_dropped += count - sent;
	}
	/* Keep the unused reservations for the next burst, moved to the front. */
	uint32_t left = q->tx_reserved - count;
	for (uint32_t i = 0; i < left; i++) {
		q->tx[i] = q->tx[count + i];
		q->tx_meta[2 * i] = q->tx_meta[2 * (count + i)];
		q->tx_meta[2 * i + 1] = 0;
	}
	q->tx_reserved = (uint16_t)left;
	return sent;
}

int pno_dp_stats(uint16_t port, uint64_t *out)
{
	struct rte_eth_stats s;
	int ret = rte_eth_stats_get(port, &s);
	if (ret != 0)
		return fail(ret, "rte_eth_stats_get(port %u): %s", port, rte_strerror(-ret));
	uint64_t tx_dropped = 0;
	for (int i = 0; i < PNO_DP_MAX_QUEUES; i++)
		tx_dropped += queues[i].tx_dropped;
	out[0] = s.ipackets;
	out[1] = s.opackets;
	out[2] = s.ibytes;
	out[3] = s.obytes;
	out[4] = s.imissed;
	out[5] = s.ierrors;
	out[6] = s.oerrors;
	out[7] = s.rx_nombuf;
	out[8] = tx_dropped;
	out[9] = rte_mempool_avail_count(pool);
	/* net_af_xdp's imissed is the socket's rx_dropped only; frames the kernel could not hand
	 * over because the RX ring was full or the fill ring empty are counted here. */
	out[10] = 0;
	out[11] = 0;
	for (int q = 0; q < PNO_DP_MAX_QUEUES; q++) {
		struct xdp_statistics xs;
		socklen_t len = sizeof(xs);
		if (xsk_fds[q] < 0 || getsockopt(xsk_fds[q], SOL_XDP, XDP_STATISTICS, &xs, &len) != 0)
			continue;
		out[10] += xs.rx_ring_full;
		out[11] += xs.rx_fill_ring_empty_descs;
	}
	return 0;
}

int pno_dp_mac(uint16_t port, uint8_t *out)
{
	struct rte_ether_addr addr;
	int ret = rte_eth_macaddr_get(port, &addr);
	if (ret != 0)
		return fail(ret, "rte_eth_macaddr_get(port %u): %s", port, rte_strerror(-ret));
	memcpy(out, addr.addr_bytes, RTE_ETHER_ADDR_LEN);
	return 0;
}

int pno_dp_link(uint16_t port, uint32_t *out)
{
	struct rte_eth_link link;
	int ret = rte_eth_link_get_nowait(port, &link);
	if (ret != 0)
		return fail(ret, "rte_eth_link_get_nowait(port %u): %s", port, rte_strerror(-ret));
	out[0] = link.link_speed;
	out[1] = link.link_status;
	out[2] = link.link_duplex;
	return 0;
}

int pno_dp_shutdown(uint16_t port)
{
	for (int i = 0; i < PNO_DP_MAX_QUEUES; i++) {
		struct pno_dp_queue *q = &queues[i];
		if (q->rx_count)
			rte_pktmbuf_free_bulk(q->rx, q->rx_count);
		if (q->tx_reserved)
			rte_pktmbuf_free_bulk(q->tx, q->tx_reserved);
		q->rx_count = q->tx_reserved = 0;
	}
	int ret = rte_eth_dev_stop(port);
	if (ret != 0)
		return fail(ret, "rte_eth_dev_stop(port %u): %s", port, rte_strerror(-ret));
	rte_eth_dev_close(port);
	ret = rte_eal_cleanup();
	if (ret != 0)
		return fail(ret, "rte_eal_cleanup: %s", rte_strerror(-ret));
	return 0;
}

/*
 * Waking on the wire. A NIC driver's poll loop sleeps with the RX interrupt armed (NAPI, DPDK's
 * rx-interrupt mode); net_af_packet has no RX interrupt (rte_eth_dev_rx_intr_enable answers
 * -ENOTSUP: pno_dp_rx_intr_probe), so the bridge opens a second AF_PACKET socket on the same
 * interface whose only use is to become readable when a frame arrives. While the bridge is
 * busy its filter drops everything (a BPF `ret #0` per frame, no copy); armed before a sleep, it
 * keeps one byte of each frame, enough to end a poll().
 */

#ifndef PACKET_IGNORE_OUTGOING
#define PACKET_IGNORE_OUTGOING 23
#endif

/* What rte_eth_dev_rx_intr_enable says for this port and queue (0 if it has RX interrupts). */
int pno_dp_rx_intr_probe(uint16_t port, uint16_t queue)
{
	return rte_eth_dev_rx_intr_enable(port, queue);
}

static int wake_filter(int fd, uint32_t keep)
{
	struct sock_filter code[] = {{BPF_RET | BPF_K, 0, 0, keep}};
	struct sock_fprog prog = {.len = 1, .filter = code};
	return setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog));
}

int pno_dp_wake_open(const char *ifname)
{
	unsigned idx = if_nametoindex(ifname);
	if (idx == 0)
		return fail(-1, "wake socket: no interface %s", ifname);
	int fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, htons(ETH_P_ALL));
	if (fd < 0)
		return fail(-1, "wake socket: socket(AF_PACKET): %s", strerror(errno));
	int one = 1, small = 4096;
	/* Filter first: nothing queues between bind and the first arm. */
	if (wake_filter(fd, 0) != 0 ||
	    setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof(one)) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)) != 0) {
		int e = errno;
		close(fd);
		return fail(-1, "wake socket on %s: setsockopt: %s", ifname, strerror(e));
	}
	struct sockaddr_ll sll = {0};
	sll.sll_family = AF_PACKET;
	sll.sll_protocol = htons(ETH_P_ALL);
	sll.sll_ifindex = (int)idx;
	if (bind(fd, (struct sockaddr *)&sll, sizeof(sll)) != 0) {
		int e = errno;
		close(fd);
		return fail(-1, "wake socket: bind to %s: %s", ifname, strerror(e));
	}
	return fd;
}

static void drain_wake(int fd)
{
	uint8_t byte[64];
	for (int i = 0; i < 256 && recv(fd, byte, sizeof(byte), MSG_DONTWAIT) >= 0; i++)
		;
}

void pno_dp_wake_drain(int fd)
{
	drain_wake(fd);
}

int pno_dp_wake_arm(int fd, int armed)
{
	if (wake_filter(fd, armed ? 1 : 0) != 0)
		return fail(-1, "wake socket: SO_ATTACH_FILTER: %s", strerror(errno));
	/* Frames taken while disarmed never queued; any left from the last sleep go now. */
	if (armed)
		drain_wake(fd);
	return 0;
}

int pno_dp_wait(int wake_fd, int event_fd, int timeout_ms)
{
	struct pollfd pfd[2] = {{.fd = wake_fd, .events = POLLIN}, {.fd = event_fd, .events = POLLIN}};
	struct timespec end;
	clock_gettime(CLOCK_MONOTONIC, &end);
	end.tv_sec += timeout_ms / 1000;
	end.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
	if (end.tv_nsec >= 1000000000) {
		end.tv_sec++;
		end.tv_nsec -= 1000000000;
	}
	int n;
	/* A signal (V8's profiler samples with SIGPROF, 1,000 a second) is not a wakeup: sleep on. */
	while ((n = poll(pfd, 2, timeout_ms)) < 0 && errno == EINTR) {
		struct timespec now;
		clock_gettime(CLOCK_MONOTONIC, &now);
		long left = (end.tv_sec - now.tv_sec) * 1000 + (end.tv_nsec - now.tv_nsec) / 1000000;
		if (left <= 0)
			return 0;
		timeout_ms = (int)left;
	}
	if (n < 0)
		return -errno;
	int why = 0;
	/* The frame that woke us stays queued: draining takes two system calls, which the reply
	 * to that frame would wait for; the next arm drains instead. */
	if (pfd[0].revents & POLLIN)
		why |= PNO_DP_WOKE_WIRE;
	if (pfd[1].revents & POLLIN) {
		uint64_t count;
		ssize_t r = read(event_fd, &count, sizeof(count)); /* -1: another reader took it */
		(void)r;
		why |= PNO_DP_WOKE_KICK;
	}
	return why;
}

/*
 * The application side of a region, in C through the generated pno_rings.h, as the LD_PRELOAD
 * shim will use it. Driven by packages/rings/c_producer_test.ts.
 *
 *   ring_producer <region path> good <sock> <bytes> <thread>
 *       claims thread entry <thread>, writes <bytes> pattern bytes into socket <sock>'s TX ring
 *       in varying chunks, and after each chunk rings the socket's data doorbell as the shim
 *       does: unless a PNO_CMD_DATA the NIC has not served is in flight (the host line's
 *       data_req differs from the NIC line's data_ack), bump data_req and post PNO_CMD_DATA
 *       (req_id = chunk number) on the thread's command ring.
 *   ring_producer <region path> hostile <sock> 0 <thread>
 *       writes 100 good bytes, then a TX producer index past the ring, five commands of which
 *       four are bad, and a completion-ring consumer index past its producer.
 *   ring_producer <region path> torn 0 0 0
 *       corrupts the header's total_size.
 *
 * Prints one line "ok <n>" or "error <what>"; exit status 0 or 1 (3 if the header is refused).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pno_rings.h"

/* Byte i of every test stream; packages/rings/_test_pattern.ts computes the same. */
static uint8_t pattern_byte(uint32_t i)
{
	return (uint8_t)(((i * 0x9e3779b1u) >> 24) ^ i);
}

static void put_cmd(struct pno_dring *cmds, void *base, uint16_t opcode, uint32_t sock,
		    uint32_t gen, uint32_t req_id, int32_t arg0)
{
	while (pno_dring_reserve(cmds, 1) < 1)
		sched_yield();
	struct pno_cmd_shutdown *c = pno_dring_prod_slot(cmds, 0);
	memset(c, 0, sizeof(*c));
	c->hdr.opcode = opcode;
	c->hdr.sock = sock;
	c->hdr.gen = gen;
	c->hdr.req_id = req_id;
	c->how = arg0; /* the first body word: how, backlog, data_req... */
	pno_dring_publish(cmds, 1);
	pno_region_ring_doorbell(base);
}

/* The data doorbell, coalesced: at most one PNO_CMD_DATA in flight per socket. */
static int data_doorbell(struct pno_dring *cmds, void *base, struct pno_sock *s, uint32_t sock,
			 uint32_t req_id)
{
	uint32_t req = __atomic_load_n(&s->data_req, __ATOMIC_RELAXED);
	if (__atomic_load_n(&s->data_ack, __ATOMIC_SEQ_CST) != req)
		return 0;
	__atomic_store_n(&s->data_req, req + 1, __ATOMIC_SEQ_CST);
	put_cmd(cmds, base, PNO_CMD_DATA, sock, __atomic_load_n(&s->gen, __ATOMIC_ACQUIRE), req_id,
		(int32_t)(req + 1));
	return 1;
}

int main(int argc, char **argv)
{
	if (argc != 6) {
		fprintf(stderr, "usage: %s <region> good|hostile|torn <sock> <bytes> <thread>\n",
			argv[0]);
		return 1;
	}
	const char *mode = argv[2];
	uint32_t sock = (uint32_t)strtoul(argv[3], NULL, 0);
	uint64_t total = strtoull(argv[4], NULL, 0);
	uint32_t thread = (uint32_t)strtoul(argv[5], NULL, 0);

	int fd = open(argv[1], O_RDWR | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) != 0) {
		printf("error open\n");
		return 1;
	}
	void *base = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (base == MAP_FAILED) {
		printf("error mmap\n");
		return 1;
	}
	struct pno_region_header *h = base;
	if (strcmp(mode, "torn") == 0) {
		h->total_size += PNO_PAGE_SIZE;
		printf("ok 0\n");
		return 0;
	}
	int bad = pno_region_check(base, (uint64_t)st.st_size);
	if (bad != 0) {
		printf("error region %d\n", bad);
		return 3;
	}
	if (sock >= h->max_sockets || thread >= h->max_threads) {
		printf("error range\n");
		return 1;
	}

	struct pno_bring tx;
	struct pno_dring cmds;
	struct pno_sock *s = pno_region_sock(base, sock);
	uint32_t gen = __atomic_load_n(&s->gen, __ATOMIC_ACQUIRE);
	pno_region_tx_producer(&tx, base, sock);
	pno_region_cmd_producer(&cmds, base, thread);

	if (strcmp(mode, "hostile") == 0) {
		uint8_t buf[100];
		for (uint32_t i = 0; i < sizeof(buf); i++)
			buf[i] = pattern_byte(i);
		if (pno_bring_write(&tx, buf, sizeof(buf)) != (int64_t)sizeof(buf)) {
			printf("error write\n");
			return 1;
		}
		__atomic_store_n(&tx.ctrl->prod, tx.own + h->tx_bytes + 1000, __ATOMIC_RELEASE);
		put_cmd(&cmds, base, 0x7777, 1, gen, 1, 0);              /* unknown opcode */
		put_cmd(&cmds, base, 0, 1, gen, 2, 0);                   /* opcode 0 */
		put_cmd(&cmds, base, PNO_CMD_CLOSE, 1000000, gen, 3, 0); /* socket out of range */
		put_cmd(&cmds, base, PNO_CMD_SHUTDOWN, 1, gen, 4, 9);    /* how out of range */
		put_cmd(&cmds, base, PNO_CMD_CLOSE, 1, gen, 5, -1);      /* a good one */
		struct pno_dring cpl;
		pno_region_cpl_consumer(&cpl, base, thread);
		__atomic_store_n(&cpl.ctrl->cons, 12345, __ATOMIC_RELEASE); /* past the producer */
		printf("ok 5\n");
		return 0;
	}

	/* A thread claims its command ring before its first command. */
	struct pno_thread_line *t = pno_region_thread(base, thread);
	uint32_t free_tid = 0;
	if (!__atomic_compare_exchange_n(&t->owner_tid, &free_tid, (uint32_t)getpid(), 0,
					 __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
		printf("error thread %u owned by %u\n", thread, free_tid);
		return 1;
	}
	__atomic_store_n(&t->owner_pid, (uint32_t)getpid(), __ATOMIC_RELEASE);

	static uint8_t chunk[70000];
	uint64_t written = 0;
	uint32_t chunks = 0;
	uint32_t doorbells = 0;
	uint32_t rng = 2463534242u;
	while (written < total) {
		rng ^= rng << 13;
		rng ^= rng >> 17;
		rng ^= rng << 5;
		uint32_t len = 1 + rng % (rng & 0x100 ? 60000 : 700);
		if (len > total - written)
			len = (uint32_t)(total - written);
		for (uint32_t i = 0; i < len; i++)
			chunk[i] = pattern_byte((uint32_t)(written + i));
		uint32_t done = 0;
		while (done < len) {
			int64_t n = pno_bring_write(&tx, chunk + done, len - done);
			if (n < 0) {
				printf("error ring fault\n");
				return 1;
			}
			if (n == 0)
				sched_yield();
			done += (uint32_t)n;
		}
		written += len;
		doorbells += (uint32_t)data_doorbell(&cmds, base, s, sock, chunks++);
	}
	/* The thread exits: its ring is free for the next thread (indices stay). */
	__atomic_store_n(&t->owner_pid, 0, __ATOMIC_RELEASE);
	__atomic_store_n(&t->owner_tid, 0, __ATOMIC_RELEASE);
	printf("ok %u\n", doorbells);
	return 0;
}

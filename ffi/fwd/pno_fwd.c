/*
 * pno_fwd: the impaired network between two veth ends, in user space, because this kernel has no
 * sch_netem. It reads every frame arriving on interface A and writes it to interface B, and the
 * other way round, through AF_PACKET sockets, applying the fault injector's faults
 * (packages/bridge/phy/fault_injector.ts: the same meanings, the same PRNG and the same order of
 * draws) with a seeded PRNG per direction: loss, duplication, delay with jitter, and netem's
 * reordering (a share of frames skips the delay and overtakes the delayed ones).
 *
 * `pno wire up --loss ...` puts one forwarder on the PnO link and one on the kernel's twin link
 * with the same settings and seed, so a lossy figure is a ratio to Linux under the same faults.
 *
 * Usage: pno_fwd --a IF --b IF [--loss PCT] [--duplicate PCT] [--delay MS] [--jitter MS]
 *                [--reorder PCT] [--seed N] [--slots N]
 * Prints one JSON ready line, then a JSON line of counters on SIGUSR1 and at exit (SIGTERM,
 * SIGINT).
 *
 * Reads top to bottom: settings and PRNG; the slot pool and its heap; one direction's receive,
 * faults and send; the main loop.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef PACKET_QDISC_BYPASS
#define PACKET_QDISC_BYPASS 20
#endif
#ifndef PACKET_IGNORE_OUTGOING
#define PACKET_IGNORE_OUTGOING 23
#endif

/* Frames per receive round and per sendmmsg: one system call moves a burst, as DPDK's do. */
#define BURST 64
#define SLOT_SIZE 2048
/* Receive ring: frames of 2 KiB (a 1,514-byte frame and its header), 16 per 32 KiB block. */
#define RING_FRAME 2048
#define RING_BLOCK (16 * RING_FRAME)
#define RING_FRAMES 8192
/* How long the loop looks at idle rings before it sleeps in ppoll. */
#define SPIN_NS 50000

/* ---- settings and PRNG ------------------------------------------------------------------- */

struct settings {
  const char *if_a, *if_b;
  double loss, dup, reorder; /* probabilities in [0, 1] */
  double delay_ms, jitter_ms;
  uint32_t seed;
  uint32_t slots;
};

/* mulberry32, as fault_injector.ts's Prng: next() is uniform in [0, 1). */
struct prng {
  uint32_t state;
};

static double prng_next(struct prng *r)
{
  uint32_t t = (r->state += 0x6d2b79f5u);
  t = (t ^ (t >> 15)) * (t | 1u);
  t ^= t + (t ^ (t >> 7)) * (t | 61u);
  return (double)(t ^ (t >> 14)) / 4294967296.0;
}

static int64_t now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- counters ---------------------------------------------------------------------------- */

struct counters {
  uint64_t frames_in;  /* frames received from this direction's source */
  uint64_t frames_out; /* frames written to its destination */
  uint64_t bytes_out;
  uint64_t dropped;   /* lost at random */
  uint64_t duplicated;
  uint64_t delayed;
  uint64_t reordered;
  uint64_t pool_full; /* no free slot (or the frame did not fit one) */
  uint64_t tx_failed; /* the destination refused the frame (ENOBUFS after retries) */
};

/* ---- one direction: the slot pool, the heap of held frames, the send batch --------------- */

struct direction {
  const char *name; /* "ab" or "ba" */
  int from, to;     /* AF_PACKET sockets */
  struct prng rng;
  struct counters c;
  uint8_t *pool;   /* slots * SLOT_SIZE */
  uint32_t *len;   /* frame length per slot */
  int64_t *due;    /* release time per slot (ns) */
  uint64_t *order; /* arrival order per slot: FIFO among equal due times */
  uint32_t *free_slots;
  uint32_t free_top;
  uint32_t *heap; /* min-heap of held slots by (due, order) */
  uint32_t heap_size;
  uint64_t arrivals;
  /* The receive ring (TPACKET_V2) of `from`: the kernel copies each frame into it as it
   * arrives, in the sender's context, so the forwarder makes no copy and no call to receive. */
  uint8_t *ring;
  uint32_t ring_frames, ring_head;
  /* Frames to send now, in order: a pool slot, or a frame still in the ring. */
  struct out {
    uint8_t *data;
    uint32_t len;
    int32_t slot;                /* pool slot to free once sent, or -1 */
    struct tpacket2_hdr *frame; /* ring frame to give back once sent, or NULL */
  } batch[2 * BURST];
  uint32_t batch_n;
};

static int before(const struct direction *d, uint32_t a, uint32_t b)
{
  return d->due[a] < d->due[b] || (d->due[a] == d->due[b] && d->order[a] < d->order[b]);
}

static void heap_push(struct direction *d, uint32_t slot)
{
  uint32_t i = d->heap_size++;
  while (i > 0) {
    uint32_t parent = (i - 1) / 2;
    if (!before(d, slot, d->heap[parent])) break;
    d->heap[i] = d->heap[parent];
    i = parent;
  }
  d->heap[i] = slot;
}

static uint32_t heap_pop(struct direction *d)
{
  uint32_t first = d->heap[0], last = d->heap[--d->heap_size], i = 0;
  for (;;) {
    uint32_t l = 2 * i + 1, r = l + 1, m = i;
    uint32_t best = last;
    if (l < d->heap_size && before(d, d->heap[l], best)) {
      m = l;
      best = d->heap[l];
    }
    if (r < d->heap_size && before(d, d->heap[r], best)) m = r;
    if (m == i) break;
    d->heap[i] = d->heap[m];
    i = m;
  }
  if (d->heap_size > 0) d->heap[i] = last;
  return first;
}

static int direction_init(struct direction *d, const char *name, int from, int to, uint32_t seed,
                          uint32_t slots)
{
  memset(d, 0, sizeof *d);
  d->name = name;
  d->from = from;
  d->to = to;
  d->rng.state = seed;
  d->pool = malloc((size_t)slots * SLOT_SIZE);
  d->len = calloc(slots, sizeof *d->len);
  d->due = calloc(slots, sizeof *d->due);
  d->order = calloc(slots, sizeof *d->order);
  d->free_slots = calloc(slots, sizeof *d->free_slots);
  d->heap = calloc(slots, sizeof *d->heap);
  if (!d->pool || !d->len || !d->due || !d->order || !d->free_slots || !d->heap) return -1;
  for (uint32_t i = 0; i < slots; i++) d->free_slots[i] = slots - 1 - i;
  d->free_top = slots;
  return 0;
}

/* This copy's delay in ns: 0 when there is none or it is reordered (fault_injector.ts delay()). */
static int64_t copy_delay(struct direction *d, const struct settings *s)
{
  if (s->delay_ms == 0 && s->jitter_ms == 0) return 0;
  if (s->reorder > 0 && prng_next(&d->rng) < s->reorder) {
    d->c.reordered++;
    return 0;
  }
  double ms = s->delay_ms;
  if (s->jitter_ms != 0) ms = s->delay_ms + s->jitter_ms * (2 * prng_next(&d->rng) - 1);
  return ms <= 0 ? 0 : (int64_t)(ms * 1e6);
}

/* Sends the batch with sendmmsg, retrying a refusing destination briefly; frees its frames. */
static void send_batch(struct direction *d)
{
  struct mmsghdr msgs[2 * BURST];
  struct iovec iov[2 * BURST];
  uint32_t sent = 0, tries = 0;
  for (uint32_t i = 0; i < d->batch_n; i++) {
    iov[i].iov_base = d->batch[i].data;
    iov[i].iov_len = d->batch[i].len;
    memset(&msgs[i], 0, sizeof msgs[i]);
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
  }
  while (sent < d->batch_n) {
    int n = sendmmsg(d->to, msgs + sent, d->batch_n - sent, 0);
    if (n > 0) {
      for (int i = 0; i < n; i++) d->c.bytes_out += d->batch[sent + i].len;
      sent += n;
      d->c.frames_out += n;
      continue;
    }
    /* A veth whose peer's backlog is full refuses with ENOBUFS; a short wait lets it drain. */
    if ((errno == ENOBUFS || errno == EAGAIN || errno == EINTR) && ++tries < 1000) {
      if (errno != EINTR) {
        struct timespec pause = {0, 20000};
        nanosleep(&pause, NULL);
      }
      continue;
    }
    d->c.tx_failed++;
    sent++; /* this frame is lost; the rest still go */
  }
  for (uint32_t i = 0; i < d->batch_n; i++) {
    struct out *o = &d->batch[i];
    if (o->slot >= 0) d->free_slots[d->free_top++] = (uint32_t)o->slot;
    if (o->frame) __atomic_store_n(&o->frame->tp_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
  }
  d->batch_n = 0;
}

static void batch_add(struct direction *d, uint8_t *data, uint32_t len, int32_t slot,
                      struct tpacket2_hdr *frame)
{
  if (d->batch_n == 2 * BURST) send_batch(d);
  d->batch[d->batch_n++] = (struct out){data, len, slot, frame};
}

/* Moves held frames that are due into the batch (sending full batches as they fill). */
static void release_due(struct direction *d, int64_t now)
{
  while (d->heap_size > 0 && d->due[d->heap[0]] <= now) {
    uint32_t slot = heap_pop(d);
    batch_add(d, d->pool + (size_t)slot * SLOT_SIZE, d->len[slot], (int32_t)slot, NULL);
  }
}

/* Copies a frame into a free pool slot; returns it, or -1 (counted) if none is free. */
static int64_t hold_copy(struct direction *d, const uint8_t *data, uint32_t len)
{
  if (d->free_top == 0 || len > SLOT_SIZE) {
    d->c.pool_full++;
    return -1;
  }
  uint32_t slot = d->free_slots[--d->free_top];
  memcpy(d->pool + (size_t)slot * SLOT_SIZE, data, len);
  d->len[slot] = len;
  return slot;
}

/*
 * Places one copy of a received frame: into the batch now (straight from the ring when it is
 * the original), or into a pool slot held until its delay is over. Returns true if the copy
 * took the ring frame (which is then given back after the send).
 */
static int place(struct direction *d, const struct settings *s, uint8_t *data, uint32_t len,
                 struct tpacket2_hdr *frame, int64_t now)
{
  int64_t delay = copy_delay(d, s);
  if (delay <= 0) {
    if (frame != NULL) {
      batch_add(d, data, len, -1, frame);
      return 1;
    }
    int64_t slot = hold_copy(d, data, len);
    if (slot >= 0) batch_add(d, d->pool + (size_t)slot * SLOT_SIZE, len, (int32_t)slot, NULL);
    return 0;
  }
  int64_t slot = hold_copy(d, data, len);
  if (slot < 0) return 0;
  d->due[slot] = now + delay;
  d->order[slot] = d->arrivals++;
  heap_push(d, (uint32_t)slot);
  d->c.delayed++;
  return 0;
}

/* Takes up to a burst from the ring, applies the faults and sends what is due. */
static int pump(struct direction *d, const struct settings *s)
{
  int n = 0;
  int64_t now = 0;
  while (n < BURST) {
    struct tpacket2_hdr *f =
        (struct tpacket2_hdr *)(d->ring + (size_t)d->ring_head * RING_FRAME);
    uint32_t status = __atomic_load_n(&f->tp_status, __ATOMIC_ACQUIRE);
    if (!(status & TP_STATUS_USER)) break;
    if (n == 0) now = now_ns();
    d->ring_head = (d->ring_head + 1) % d->ring_frames;
    n++;
    d->c.frames_in++;
    uint8_t *data = (uint8_t *)f + f->tp_mac;
    uint32_t len = f->tp_snaplen;
    int taken = 0;
    if (status & TP_STATUS_COPY || len != f->tp_len) {
      d->c.pool_full++; /* larger than a ring frame: not ours to carry */
    } else if (s->loss > 0 && prng_next(&d->rng) < s->loss) {
      d->c.dropped++;
    } else {
      if (s->dup > 0 && prng_next(&d->rng) < s->dup) {
        d->c.duplicated++;
        place(d, s, data, len, NULL, now);
      }
      taken = place(d, s, data, len, f, now);
    }
    if (!taken) __atomic_store_n(&f->tp_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
  }
  if (n == 0) return 0;
  release_due(d, now);
  if (d->batch_n > 0) send_batch(d);
  return n;
}

/* ---- sockets, counters, main loop -------------------------------------------------------- */

static int open_port(const char *ifname, uint8_t **ring)
{
  unsigned idx = if_nametoindex(ifname);
  if (idx == 0) {
    fprintf(stderr, "pno_fwd: no interface %s\n", ifname);
    return -1;
  }
  int fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, htons(ETH_P_ALL));
  if (fd < 0) {
    perror("pno_fwd: socket(AF_PACKET)");
    return -1;
  }
  struct sockaddr_ll sll = {0};
  sll.sll_family = AF_PACKET;
  sll.sll_protocol = htons(ETH_P_ALL);
  sll.sll_ifindex = (int)idx;
  if (bind(fd, (struct sockaddr *)&sll, sizeof sll) != 0) {
    perror("pno_fwd: bind");
    return -1;
  }
  int one = 1;
  /* Our own transmissions on this interface are not frames to forward back. */
  if (setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one) != 0) {
    perror("pno_fwd: PACKET_IGNORE_OUTGOING");
    return -1;
  }
  int version = TPACKET_V2;
  struct tpacket_req req = {
      .tp_block_size = RING_BLOCK,
      .tp_block_nr = RING_FRAMES * RING_FRAME / RING_BLOCK,
      .tp_frame_size = RING_FRAME,
      .tp_frame_nr = RING_FRAMES,
  };
  if (setsockopt(fd, SOL_PACKET, PACKET_VERSION, &version, sizeof version) != 0 ||
      setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &req, sizeof req) != 0) {
    perror("pno_fwd: PACKET_RX_RING");
    return -1;
  }
  *ring = mmap(NULL, (size_t)RING_FRAMES * RING_FRAME, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (*ring == MAP_FAILED) {
    perror("pno_fwd: mmap of the receive ring");
    return -1;
  }
  /* veth has no queue of its own (noqueue): going straight to the driver saves a lock. */
  setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof one);
  int bytes = 8 << 20;
  setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &bytes, sizeof bytes);
  return fd;
}

static void print_counters(const struct direction *dirs, const char *event)
{
  printf("{\"event\":\"%s\"", event);
  for (int k = 0; k < 2; k++) {
    const struct counters *c = &dirs[k].c;
    printf(",\"%s\":{\"framesIn\":%llu,\"framesOut\":%llu,\"bytesOut\":%llu,\"dropped\":%llu,"
           "\"duplicated\":%llu,\"delayed\":%llu,\"reordered\":%llu,\"poolFull\":%llu,"
           "\"txFailed\":%llu,\"held\":%u}",
           dirs[k].name, (unsigned long long)c->frames_in, (unsigned long long)c->frames_out,
           (unsigned long long)c->bytes_out, (unsigned long long)c->dropped,
           (unsigned long long)c->duplicated, (unsigned long long)c->delayed,
           (unsigned long long)c->reordered, (unsigned long long)c->pool_full,
           (unsigned long long)c->tx_failed, dirs[k].heap_size);
  }
  printf("}\n");
  fflush(stdout);
}

static volatile sig_atomic_t stop_requested, report_requested;

static void on_signal(int sig)
{
  if (sig == SIGUSR1) report_requested = 1;
  else stop_requested = 1;
}

static int parse_percent(const char *flag, const char *v, double *out)
{
  char *end;
  double p = strtod(v, &end);
  if (*end != 0 || !(p >= 0 && p <= 100)) {
    fprintf(stderr, "pno_fwd: %s takes a percentage in [0, 100], not %s\n", flag, v);
    return -1;
  }
  *out = p / 100;
  return 0;
}

static int parse_ms(const char *flag, const char *v, double *out)
{
  char *end;
  double ms = strtod(v, &end);
  if (*end != 0 || !(ms >= 0 && ms <= 60000)) {
    fprintf(stderr, "pno_fwd: %s takes milliseconds in [0, 60000], not %s\n", flag, v);
    return -1;
  }
  *out = ms;
  return 0;
}

static int parse_args(int argc, char **argv, struct settings *s)
{
  s->seed = 1;
  s->slots = 16384;
  for (int i = 1; i < argc; i++) {
    const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (v == NULL) {
      fprintf(stderr, "pno_fwd: %s needs a value\n", f);
      return -1;
    }
    i++;
    int bad = 0;
    if (!strcmp(f, "--a")) s->if_a = v;
    else if (!strcmp(f, "--b")) s->if_b = v;
    else if (!strcmp(f, "--loss")) bad = parse_percent(f, v, &s->loss);
    else if (!strcmp(f, "--duplicate")) bad = parse_percent(f, v, &s->dup);
    else if (!strcmp(f, "--reorder")) bad = parse_percent(f, v, &s->reorder);
    else if (!strcmp(f, "--delay")) bad = parse_ms(f, v, &s->delay_ms);
    else if (!strcmp(f, "--jitter")) bad = parse_ms(f, v, &s->jitter_ms);
    else if (!strcmp(f, "--seed")) s->seed = (uint32_t)strtoul(v, NULL, 0);
    else if (!strcmp(f, "--slots")) s->slots = (uint32_t)strtoul(v, NULL, 0);
    else {
      fprintf(stderr, "pno_fwd: unknown option %s\n", f);
      return -1;
    }
    if (bad) return -1;
  }
  if (!s->if_a || !s->if_b) {
    fprintf(stderr, "pno_fwd: --a IF and --b IF are required\n");
    return -1;
  }
  if (s->reorder > 0 && s->delay_ms == 0) {
    fprintf(stderr, "pno_fwd: reorder makes frames skip the delay: give a delay too\n");
    return -1;
  }
  if (s->slots < 2 * BURST || s->slots > (1u << 22)) {
    fprintf(stderr, "pno_fwd: --slots takes %u to %u\n", 2 * BURST, 1u << 22);
    return -1;
  }
  return 0;
}

int main(int argc, char **argv)
{
  struct settings s = {0};
  if (parse_args(argc, argv, &s) != 0) return 2;
  uint8_t *ring_a = NULL, *ring_b = NULL;
  int a = open_port(s.if_a, &ring_a), b = open_port(s.if_b, &ring_b);
  if (a < 0 || b < 0) return 1;
  static struct direction dirs[2];
  /* Seeds per direction as the bridge's injector draws them (rx: seed, tx: seed ^ golden). */
  if (direction_init(&dirs[0], "ab", a, b, s.seed, s.slots) != 0 ||
      direction_init(&dirs[1], "ba", b, a, s.seed ^ 0x9e3779b9u, s.slots) != 0) {
    fprintf(stderr, "pno_fwd: out of memory for %u slots\n", s.slots);
    return 1;
  }
  dirs[0].ring = ring_a;
  dirs[1].ring = ring_b;
  dirs[0].ring_frames = dirs[1].ring_frames = RING_FRAMES;
  struct sigaction sa = {0};
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGUSR1, &sa, NULL);
  printf("{\"event\":\"ready\",\"pid\":%d,\"a\":\"%s\",\"b\":\"%s\"}\n", getpid(), s.if_a, s.if_b);
  fflush(stdout);

  struct pollfd pfd[2] = {{.fd = a, .events = POLLIN}, {.fd = b, .events = POLLIN}};
  int64_t last_work = 0;
  while (!stop_requested) {
    if (report_requested) {
      report_requested = 0;
      print_counters(dirs, "counters");
    }
    int work = pump(&dirs[0], &s) + pump(&dirs[1], &s);
    int64_t t = now_ns();
    if (work > 0) last_work = t;
    /* Spin briefly after work: a frame of a busy flow is due within microseconds, and looking
     * at the rings is a load, where sleeping and waking cost a context switch each way. */
    if (t - last_work < SPIN_NS) {
      if (work == 0) __builtin_ia32_pause();
      continue;
    }
    /* Nothing received: sleep until a frame arrives or the first held frame falls due. */
    int64_t now = now_ns(), next = INT64_MAX;
    for (int k = 0; k < 2; k++) {
      release_due(&dirs[k], now);
      if (dirs[k].batch_n > 0) send_batch(&dirs[k]);
      if (dirs[k].heap_size > 0 && dirs[k].due[dirs[k].heap[0]] < next) {
        next = dirs[k].due[dirs[k].heap[0]];
      }
    }
    struct timespec ts, *timeout = NULL;
    if (next != INT64_MAX) {
      int64_t wait = next - now_ns();
      if (wait < 0) wait = 0;
      ts.tv_sec = wait / 1000000000;
      ts.tv_nsec = wait % 1000000000;
      timeout = &ts;
    }
    if (ppoll(pfd, 2, timeout, NULL) < 0 && errno != EINTR) {
      perror("pno_fwd: ppoll");
      return 1;
    }
  }
  print_counters(dirs, "exit");
  return 0;
}

/*
 * Threads sharing sockets and one epoll set (tests/shim_threads_test.ts), against its peer
 * tests/shim_progs/threads_peer.c. Usage: threads_shared_epoll SCENARIO PORT.
 *
 * shared-epoll: 8 threads wait in epoll_wait on one epoll set that holds the listener and
 *   every connection (EPOLLONESHOT, re-armed by whoever handled the event, as multi-threaded
 *   servers do). Whichever thread sees the listener accepts; whichever sees a connection reads
 *   its request (read, recv or readv), checks every byte, and answers (write, send, writev, or
 *   writev of the header then sendfile of the body from a file, as nginx does), resuming on
 *   EPOLLOUT where the ring is full; it closes the connection on EOF while the other threads
 *   are blocked in epoll_wait on the same set. 1,000 connections of 1 to 3 exchanges, bodies of
 *   0 bytes to 2 MiB. Prints only totals, checksums and yes/no facts, never timings or fds.
 *
 * close-race: a thread blocks in epoll_wait on a set holding a pipe and an idle connection;
 *   another thread closes the connection meanwhile; the peer sees the close, sends a byte to
 *   the closed socket and says so on a control connection; then the pipe is written. The
 *   waiter must wake with the pipe alone: a closed fd leaves its epoll sets (Linux removes the
 *   registration with the last reference to the file). epoll_ctl DEL of the closed number
 *   answers EBADF; the next connection, often given the same number, is added afresh.
 */
#include "common.h"

#include <sys/sendfile.h>
#include <semaphore.h>

#include "threads_common.h"

/* What an epoll item's data.ptr points to: the listener's tag or a connection. */
struct conn {
  int fd;
  int accepted_by;
  uint32_t mode;
  /* The request being read. */
  uint8_t hdr[TC_HDR];
  size_t hdr_got;
  uint32_t id, round, qsize, ssize;
  uint64_t body_got;
  uint32_t fnv;
  /* The response being written (header then body); writing = 0 while reading. */
  int writing;
  uint8_t out_hdr[TC_HDR];
  uint64_t out_total, out_done;
};

static int g_ep;
static int g_listener;
static int g_patfd;
static char g_listener_tag;
static int g_done;

/* Totals, summed with atomics: every thread adds what it saw. */
static uint64_t t_accepted, t_closed, t_requests, t_req_bytes, t_resp_bytes, t_bad_bytes,
    t_fnv_xor, t_elsewhere, t_errors, t_eof_midway, t_bad_header;
static uint32_t t_io_threads; /* bit per thread that did connection I/O */
static char g_first_error[256];

static void add(uint64_t *c, uint64_t v) { __atomic_fetch_add(c, v, __ATOMIC_RELAXED); }

static void error_once(const char *what, int e) {
  add(&t_errors, 1);
  static int said;
  if (!__atomic_exchange_n(&said, 1, __ATOMIC_ACQ_REL)) {
    snprintf(g_first_error, sizeof g_first_error, "%s: %s", what, ename(e));
  }
}

static void arm(struct conn *c, uint32_t events) {
  struct epoll_event ev = {.events = events | EPOLLONESHOT, .data.ptr = c};
  if (epoll_ctl(g_ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) error_once("epoll_ctl MOD", errno);
}

static void finish(struct conn *c) {
  /* The other threads are (most of them) blocked in epoll_wait on the set holding this fd. */
  if (close(c->fd) < 0) error_once("close", errno);
  free(c);
  if (__atomic_add_fetch(&t_closed, 1, __ATOMIC_ACQ_REL) == TC_CONNS) {
    __atomic_store_n(&g_done, 1, __ATOMIC_RELEASE);
  }
}

/* One read by the connection's read path; bytes into buf. */
static ssize_t read_some(struct conn *c, uint8_t *buf, size_t n) {
  switch (c->mode % 3) {
  case 0:
    return read(c->fd, buf, n);
  case 1:
    return recv(c->fd, buf, n, 0);
  default: {
    /* Two iovecs, split unevenly. */
    size_t a = n > 7 ? n / 3 : n;
    struct iovec iov[2] = {{buf, a}, {buf + a, n - a}};
    return readv(c->fd, iov, n - a ? 2 : 1);
  }
  }
}

/* Reads what is there; 1: a request is complete, 0: wait for EPOLLIN, -1: the conn is gone. */
static int read_request(struct conn *c) {
  static __thread uint8_t buf[65536];
  for (;;) {
    size_t want;
    uint8_t *dst;
    if (c->hdr_got < TC_HDR) {
      want = TC_HDR - c->hdr_got;
      dst = c->hdr + c->hdr_got;
    } else {
      uint64_t left = c->qsize - c->body_got;
      if (left == 0) return 1;
      want = left < sizeof buf ? (size_t)left : sizeof buf;
      dst = buf;
    }
    ssize_t n = read_some(c, dst, want);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return 0;
    if (n < 0) {
      error_once("read", errno);
      finish(c);
      return -1;
    }
    if (n == 0) {
      if (c->hdr_got != 0) add(&t_eof_midway, 1);
      finish(c);
      return -1;
    }
    if (c->hdr_got < TC_HDR) {
      c->hdr_got += (size_t)n;
      if (c->hdr_got == TC_HDR) {
        c->id = tc_get32(c->hdr);
        c->round = tc_get32(c->hdr + 4);
        c->qsize = tc_get32(c->hdr + 8);
        c->ssize = tc_get32(c->hdr + 12);
        if (c->id >= TC_CONNS || c->round >= tc_rounds(c->id) ||
            c->qsize != tc_req_size(c->id, c->round) ||
            c->ssize != tc_resp_size(c->id, c->round)) {
          add(&t_bad_header, 1);
          finish(c);
          return -1;
        }
        c->mode = c->id * 3 + c->round;
        c->body_got = 0;
        c->fnv = TC_FNV_INIT;
      }
    } else {
      add(&t_bad_bytes, tc_check(tc_offset(c->id, c->round, 0), c->body_got, buf, (size_t)n));
      c->fnv = tc_fnv(c->fnv, buf, (size_t)n);
      c->body_got += (size_t)n;
      add(&t_req_bytes, (uint64_t)n);
    }
  }
}

/* Writes what fits; 1: the response is out, 0: wait for EPOLLOUT, -1: the conn is gone. */
static int write_response(struct conn *c) {
  static __thread uint8_t buf[65536];
  uint32_t off = tc_offset(c->id, c->round, 1);
  while (c->out_done < c->out_total) {
    ssize_t n;
    uint64_t at = c->out_done;
    if (c->mode % 4 == 3 && at >= TC_HDR) {
      /* nginx's way: the header went by writev, the body by sendfile from a file. */
      off_t pos = (off_t)((off + (at - TC_HDR)) % TC_PATLEN);
      uint64_t left = c->out_total - at;
      uint64_t to_end = TC_PATLEN - (uint64_t)pos;
      size_t len = (size_t)(left < to_end ? left : to_end);
      if (len > (1u << 20)) len = 1u << 20;
      n = sendfile(c->fd, g_patfd, &pos, len);
    } else {
      /* The header (if any of it is left) and a chunk of the body, in one buffer. */
      size_t hdr_left = at < TC_HDR ? (size_t)(TC_HDR - at) : 0;
      uint64_t body_at = at < TC_HDR ? 0 : at - TC_HDR;
      uint64_t body_left = c->out_total - TC_HDR - body_at;
      size_t body = (size_t)(body_left < sizeof buf ? body_left : sizeof buf);
      if (c->mode % 4 == 3) body = 0;
      for (size_t k = 0; k < body; k++) buf[k] = tc_byte(off, body_at + k);
      switch (c->mode % 4) {
      case 0:
        if (hdr_left) {
          struct iovec iov[2] = {{c->out_hdr + at, hdr_left}, {buf, body}};
          n = writev(c->fd, iov, body ? 2 : 1);
        } else {
          n = write(c->fd, buf, body);
        }
        break;
      case 1: {
        if (hdr_left) {
          uint8_t both[TC_HDR + 4096];
          size_t b = body < 4096 ? body : 4096;
          memcpy(both, c->out_hdr + at, hdr_left);
          memcpy(both + hdr_left, buf, b);
          n = send(c->fd, both, hdr_left + b, MSG_NOSIGNAL);
        } else {
          n = send(c->fd, buf, body, MSG_NOSIGNAL);
        }
        break;
      }
      default: {
        struct iovec iov[3];
        int k = 0;
        if (hdr_left) iov[k++] = (struct iovec){c->out_hdr + at, hdr_left};
        if (body > 1) {
          iov[k++] = (struct iovec){buf, body / 2};
          iov[k++] = (struct iovec){buf + body / 2, body - body / 2};
        } else if (body) {
          iov[k++] = (struct iovec){buf, body};
        }
        n = writev(c->fd, iov, k);
        break;
      }
      }
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return 0;
    if (n <= 0) {
      error_once(c->mode % 4 == 3 && at >= TC_HDR ? "sendfile" : "write", n < 0 ? errno : 0);
      finish(c);
      return -1;
    }
    c->out_done += (uint64_t)n;
    uint64_t body_sent = (at + (uint64_t)n > TC_HDR ? at + (uint64_t)n - TC_HDR : 0) -
                         (at > TC_HDR ? at - TC_HDR : 0);
    add(&t_resp_bytes, body_sent);
  }
  return 1;
}

static void serve(struct conn *c, int tid) {
  if (c->accepted_by != tid) add(&t_elsewhere, 1);
  __atomic_fetch_or(&t_io_threads, 1u << tid, __ATOMIC_RELAXED);
  for (;;) {
    if (!c->writing) {
      int r = read_request(c);
      if (r < 0) return;
      if (r == 0) {
        arm(c, EPOLLIN);
        return;
      }
      add(&t_requests, 1);
      __atomic_fetch_xor(&t_fnv_xor, (uint64_t)c->fnv * (c->id + 1) + c->round,
                         __ATOMIC_RELAXED);
      tc_put32(c->out_hdr, c->id);
      tc_put32(c->out_hdr + 4, c->round);
      tc_put32(c->out_hdr + 8, c->ssize);
      tc_put32(c->out_hdr + 12, c->fnv);
      c->writing = 1;
      c->out_total = TC_HDR + (uint64_t)c->ssize;
      c->out_done = 0;
    }
    int w = write_response(c);
    if (w < 0) return;
    if (w == 0) {
      arm(c, EPOLLOUT);
      return;
    }
    c->writing = 0;
    c->hdr_got = 0;
  }
}

static void accept_all(int tid) {
  for (;;) {
    int fd = accept4(g_listener, NULL, NULL, SOCK_NONBLOCK);
    if (fd < 0 && errno == EINTR) continue;
    if (fd < 0 && errno == EAGAIN) break;
    if (fd < 0) {
      error_once("accept4", errno);
      break;
    }
    add(&t_accepted, 1);
    checkpoint();
    struct conn *c = calloc(1, sizeof *c);
    if (!c) fail("calloc");
    c->fd = fd;
    c->accepted_by = tid;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLONESHOT, .data.ptr = c};
    if (epoll_ctl(g_ep, EPOLL_CTL_ADD, fd, &ev) < 0) error_once("epoll_ctl ADD", errno);
  }
  struct epoll_event ev = {.events = EPOLLIN | EPOLLONESHOT, .data.ptr = &g_listener_tag};
  if (epoll_ctl(g_ep, EPOLL_CTL_MOD, g_listener, &ev) < 0) error_once("epoll_ctl MOD L", errno);
}

/* Ten seconds without an event: the peer is not coming back; the totals say what was seen. */
#define IDLE_END_MS 10000
static int64_t g_last_event_ms;

static void *worker(void *arg) {
  int tid = (int)(intptr_t)arg;
  struct epoll_event evs[16];
  while (!__atomic_load_n(&g_done, __ATOMIC_ACQUIRE)) {
    int n = epoll_wait(g_ep, evs, 16, 100);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      error_once("epoll_wait", errno);
      break;
    }
    int64_t now = (int64_t)now_ms();
    if (n > 0) {
      __atomic_store_n(&g_last_event_ms, now, __ATOMIC_RELAXED);
    } else if (now - __atomic_load_n(&g_last_event_ms, __ATOMIC_RELAXED) > IDLE_END_MS) {
      __atomic_store_n(&g_done, 1, __ATOMIC_RELEASE);
      break;
    }
    for (int i = 0; i < n; i++) {
      if (evs[i].data.ptr == &g_listener_tag) accept_all(tid);
      else serve(evs[i].data.ptr, tid);
    }
  }
  return NULL;
}

/* The pattern table as a file, for the sendfile path. */
static int pattern_file(void) {
  char path[] = "/tmp/pno-threads-pattern-XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0) fail("mkstemp");
  unlink(path);
  write_all(fd, tc_pat, TC_PATLEN);
  return fd;
}

static void sc_shared_epoll(void) {
  tc_pattern_init();
  g_patfd = pattern_file();
  g_listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (g_listener < 0) fail("socket");
  int one = 1;
  if (setsockopt(g_listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0) fail("reuseaddr");
  struct sockaddr_in sa = sin_of("0.0.0.0", g_port);
  if (bind(g_listener, (struct sockaddr *)&sa, sizeof sa) < 0) fail("bind");
  if (listen(g_listener, 1024) < 0) fail("listen");
  g_ep = epoll_create1(EPOLL_CLOEXEC);
  if (g_ep < 0) fail("epoll_create1");
  struct epoll_event ev = {.events = EPOLLIN | EPOLLONESHOT, .data.ptr = &g_listener_tag};
  if (epoll_ctl(g_ep, EPOLL_CTL_ADD, g_listener, &ev) < 0) fail("epoll_ctl ADD listener");
  g_last_event_ms = (int64_t)now_ms();
  pthread_t th[TC_THREADS];
  for (int i = 0; i < TC_THREADS; i++) {
    if (pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i) != 0) fail("pthread_create");
  }
  say("listen: ok");
  for (int i = 0; i < TC_THREADS; i++) pthread_join(th[i], NULL);
  say("connections accepted: %llu", (unsigned long long)t_accepted);
  say("connections closed: %llu", (unsigned long long)t_closed);
  say("requests: %llu", (unsigned long long)t_requests);
  say("request body bytes: %llu", (unsigned long long)t_req_bytes);
  say("response body bytes: %llu", (unsigned long long)t_resp_bytes);
  say("request bytes off the pattern: %llu", (unsigned long long)t_bad_bytes);
  say("request checksums: %016llx", (unsigned long long)t_fnv_xor);
  say("bad headers: %llu, EOF inside a request: %llu", (unsigned long long)t_bad_header,
      (unsigned long long)t_eof_midway);
  say("errors: %llu%s%s", (unsigned long long)t_errors, t_errors ? " first " : "",
      g_first_error);
  say("served on a thread other than the accepting one: %s", t_elsewhere ? "yes" : "no");
  say("threads that did connection I/O: %s",
      __builtin_popcount(t_io_threads) >= 2 ? "2 or more" : "fewer than 2");
  close(g_ep);
  close(g_listener);
  close(g_patfd);
}

/* close-race ---------------------------------------------------------------------------- */

static int r_ep, r_pipe[2];
static sem_t r_go, r_woke;
static int r_extra, r_wait_errors, r_pipe_seen;

static void *race_waiter(void *arg) {
  (void)arg;
  for (int k = 0; k < TC_RACE_ROUNDS; k++) {
    while (sem_wait(&r_go) < 0 && errno == EINTR) {
    }
    struct epoll_event evs[8];
    int n;
    do n = epoll_wait(r_ep, evs, 8, 5000);
    while (n < 0 && errno == EINTR);
    if (n < 0) r_wait_errors++;
    for (int i = 0; i < n; i++) {
      if (evs[i].data.u32 == 1) {
        char b;
        if (read(r_pipe[0], &b, 1) == 1) r_pipe_seen++;
      } else {
        r_extra++;
      }
    }
    sem_post(&r_woke);
  }
  return NULL;
}

static void sc_close_race(void) {
  int l = make_listener(g_port);
  say("listen: ok");
  int control = accept_one(l);
  r_ep = epoll_create1(0);
  if (r_ep < 0 || pipe(r_pipe) < 0) fail("epoll_create1/pipe");
  struct epoll_event pe = {.events = EPOLLIN, .data.u32 = 1};
  if (epoll_ctl(r_ep, EPOLL_CTL_ADD, r_pipe[0], &pe) < 0) fail("epoll_ctl ADD pipe");
  sem_init(&r_go, 0, 0);
  sem_init(&r_woke, 0, 0);
  pthread_t w;
  if (pthread_create(&w, NULL, race_waiter, NULL) != 0) fail("pthread_create");
  int add_errors = 0, del_ebadf = 0, reused = 0, last_fd = -1;
  for (int k = 0; k < TC_RACE_ROUNDS; k++) {
    int c;
    do c = accept(l, NULL, NULL);
    while (c < 0 && errno == EINTR);
    if (c < 0) fail("accept round %d", k);
    reused += c == last_fd;
    last_fd = c;
    struct epoll_event ce = {.events = EPOLLIN | EPOLLRDHUP, .data.u32 = 2};
    if (epoll_ctl(r_ep, EPOLL_CTL_ADD, c, &ce) < 0) add_errors++;
    sem_post(&r_go);
    /* The waiter is in epoll_wait (or about to be) when the connection goes. */
    msleep(5);
    if (close(c) < 0) fail("close round %d", k);
    if (epoll_ctl(r_ep, EPOLL_CTL_DEL, c, NULL) < 0 && errno == EBADF) del_ebadf++;
    send_token(control, 'c');
    /* The peer saw the FIN and sent a byte at the closed socket. */
    expect_token(control, 'd');
    msleep(5);
    if (write(r_pipe[1], "p", 1) != 1) fail("pipe write");
    while (sem_wait(&r_woke) < 0 && errno == EINTR) {
    }
  }
  pthread_join(w, NULL);
  say("close-race rounds: %d", TC_RACE_ROUNDS);
  say("wakeups by the pipe: %d", r_pipe_seen);
  say("events for closed connections: %d", r_extra);
  say("epoll_wait errors: %d", r_wait_errors);
  say("epoll_ctl ADD failures: %d", add_errors);
  say("epoll_ctl DEL of the closed number answered EBADF: %d", del_ebadf);
  say("a connection got its predecessor's number: %s", reused ? "yes" : "no");
  close(control);
  close(l);
}

int main(int argc, char **argv) {
  static const struct scenario table[] = {
      {"shared-epoll", sc_shared_epoll},
      {"close-race", sc_close_race},
  };
  return oracle_main(argc, argv, table, sizeof table / sizeof table[0]);
}

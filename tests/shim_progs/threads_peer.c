/*
 * The client side of threads_shared_epoll.c, run in the client namespace with kernel TCP.
 * Usage: threads_peer SCENARIO ADDRESS PORT.
 *
 * shared-epoll: 8 threads; thread t drives connections t, t+8, t+16, ... in batches of 8 open
 *   at once: every request of a round is written (blocking) before any response is read, so
 *   the server has many connections in flight on all its threads. Every response byte is
 *   checked against the pattern, and the FNV-1a the server reports against the request's.
 * close-race: a control connection, then TC_RACE_ROUNDS connections, each closed by the
 *   server: the peer reads EOF, sends one byte at the closed socket, and says 'd'.
 */
#include "common.h"

#include "threads_common.h"

#define BATCH 8


static uint64_t t_conns, t_requests, t_req_bytes, t_resp_bytes, t_bad_bytes, t_bad_fnv,
    t_bad_header, t_errors;
static char g_first_error[256];

static void add(uint64_t *c, uint64_t v) { __atomic_fetch_add(c, v, __ATOMIC_RELAXED); }

static void error_once(const char *what, int e) {
  add(&t_errors, 1);
  static int said;
  if (!__atomic_exchange_n(&said, 1, __ATOMIC_ACQ_REL)) {
    snprintf(g_first_error, sizeof g_first_error, "%s: %s", what, ename(e));
  }
}

/* Like write_all/read_exact, but an error is counted instead of ending the program. */
static int send_all(int fd, const uint8_t *p, size_t n) {
  while (n > 0) {
    ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) {
      error_once("send", errno);
      return -1;
    }
    p += k;
    n -= (size_t)k;
  }
  return 0;
}

static int recv_exact(int fd, uint8_t *p, size_t n) {
  while (n > 0) {
    ssize_t k = recv(fd, p, n, 0);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) {
      error_once(k == 0 ? "recv: EOF before the response ended" : "recv", k < 0 ? errno : 0);
      return -1;
    }
    p += k;
    n -= (size_t)k;
  }
  return 0;
}

static int connect_server(void) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  if (s < 0) fail("socket");
  struct sockaddr_in sa = sin_of(g_addr, g_port);
  for (int attempt = 0;; attempt++) {
    if (connect(s, (struct sockaddr *)&sa, sizeof sa) == 0) return s;
    if (attempt == 50) {
      error_once("connect", errno);
      close(s);
      return -1;
    }
    close(s);
    msleep(20);
    s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) fail("socket");
  }
}

static int send_request(int fd, uint32_t i, uint32_t r) {
  static __thread uint8_t buf[65536];
  uint32_t q = tc_req_size(i, r);
  uint8_t hdr[TC_HDR];
  tc_put32(hdr, i);
  tc_put32(hdr + 4, r);
  tc_put32(hdr + 8, q);
  tc_put32(hdr + 12, tc_resp_size(i, r));
  if (send_all(fd, hdr, TC_HDR) < 0) return -1;
  uint32_t off = tc_offset(i, r, 0);
  for (uint64_t at = 0; at < q;) {
    size_t n = q - at < sizeof buf ? (size_t)(q - at) : sizeof buf;
    for (size_t k = 0; k < n; k++) buf[k] = tc_byte(off, at + k);
    if (send_all(fd, buf, n) < 0) return -1;
    at += n;
  }
  add(&t_req_bytes, q);
  return 0;
}

static int read_response(int fd, uint32_t i, uint32_t r) {
  static __thread uint8_t buf[65536];
  uint8_t hdr[TC_HDR];
  if (recv_exact(fd, hdr, TC_HDR) < 0) return -1;
  uint32_t s = tc_resp_size(i, r);
  if (tc_get32(hdr) != i || tc_get32(hdr + 4) != r || tc_get32(hdr + 8) != s) {
    add(&t_bad_header, 1);
    return -1;
  }
  /* The server's FNV of the request body against the body this side sent. */
  uint32_t want = TC_FNV_INIT, q = tc_req_size(i, r), qoff = tc_offset(i, r, 0);
  for (uint32_t k = 0; k < q; k++) {
    uint8_t b = tc_byte(qoff, k);
    want = tc_fnv(want, &b, 1);
  }
  if (tc_get32(hdr + 12) != want) add(&t_bad_fnv, 1);
  uint32_t off = tc_offset(i, r, 1);
  for (uint64_t at = 0; at < s;) {
    ssize_t n = recv(fd, buf, s - at < sizeof buf ? (size_t)(s - at) : sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      error_once(n == 0 ? "recv: EOF inside a response body" : "recv body", n < 0 ? errno : 0);
      return -1;
    }
    add(&t_bad_bytes, tc_check(off, at, buf, (size_t)n));
    at += (uint64_t)n;
    add(&t_resp_bytes, (uint64_t)n);
  }
  add(&t_requests, 1);
  return 0;
}

static void *client(void *arg) {
  uint32_t t = (uint32_t)(intptr_t)arg;
  for (uint32_t first = t; first < TC_CONNS; first += TC_THREADS * BATCH) {
    int fds[BATCH];
    uint32_t ids[BATCH];
    int m = 0;
    for (uint32_t i = first; i < TC_CONNS && m < BATCH; i += TC_THREADS) {
      ids[m] = i;
      fds[m] = connect_server();
      if (fds[m] >= 0) add(&t_conns, 1);
      m++;
    }
    for (uint32_t r = 0; r < 3; r++) {
      for (int j = 0; j < m; j++) {
        if (fds[j] >= 0 && r < tc_rounds(ids[j]) && send_request(fds[j], ids[j], r) < 0) {
          close(fds[j]);
          fds[j] = -1;
        }
      }
      for (int j = 0; j < m; j++) {
        if (fds[j] >= 0 && r < tc_rounds(ids[j]) && read_response(fds[j], ids[j], r) < 0) {
          close(fds[j]);
          fds[j] = -1;
        }
      }
    }
    for (int j = 0; j < m; j++) {
      if (fds[j] >= 0) close(fds[j]);
    }
  }
  return NULL;
}

static void sc_shared_epoll(void) {
  tc_pattern_init();
  pthread_t th[TC_THREADS];
  for (int i = 0; i < TC_THREADS; i++) {
    if (pthread_create(&th[i], NULL, client, (void *)(intptr_t)i) != 0) fail("pthread_create");
  }
  for (int i = 0; i < TC_THREADS; i++) pthread_join(th[i], NULL);
  say("connections: %llu", (unsigned long long)t_conns);
  say("responses: %llu", (unsigned long long)t_requests);
  say("request body bytes: %llu", (unsigned long long)t_req_bytes);
  say("response body bytes: %llu", (unsigned long long)t_resp_bytes);
  say("response bytes off the pattern: %llu", (unsigned long long)t_bad_bytes);
  say("request checksums the server got wrong: %llu", (unsigned long long)t_bad_fnv);
  say("bad response headers: %llu", (unsigned long long)t_bad_header);
  say("errors: %llu%s%s", (unsigned long long)t_errors, t_errors ? " first " : "",
      g_first_error);
}

static void sc_close_race(void) {
  int control = connect_server();
  if (control < 0) fail("control connection");
  int eof = 0, other = 0;
  for (int k = 0; k < TC_RACE_ROUNDS; k++) {
    int c = connect_server();
    if (c < 0) fail("connect round %d", k);
    expect_token(control, 'c');
    char b;
    ssize_t n = recv(c, &b, 1, 0);
    if (n == 0) eof++;
    else other++;
    /* At the closed socket: Linux answers with a reset (the result is not looked at). */
    (void)send(c, "x", 1, MSG_NOSIGNAL);
    send_token(control, 'd');
    close(c);
  }
  say("close-race: EOF seen %d times, something else %d times", eof, other);
  close(control);
}

int main(int argc, char **argv) {
  static const struct scenario table[] = {
      {"shared-epoll", sc_shared_epoll},
      {"close-race", sc_close_race},
  };
  return peer_main(argc, argv, table, sizeof table / sizeof table[0]);
}

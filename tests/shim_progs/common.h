/*
 * Shared helpers of the shim oracle programs (tests/shim_oracle_test.ts): one line of stdout per
 * observation, flushed at once, with nothing in it that differs between runs (no fd numbers,
 * no timings, no addresses but those argv gave). `FAIL ...` and exit 1 on anything unexpected.
 *
 * With ORACLE_CHECKPOINT set in the environment, the program stops once right after its first
 * connection is established (accept or connect), prints `#checkpoint` and waits for a line on
 * stdin: the test looks at the host kernel's sockets (`ss`) while the connection is surely up.
 * Without it (runs by hand) there is no stop.
 */
#ifndef PNO_ORACLE_COMMON_H
#define PNO_ORACLE_COMMON_H

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The port (argv) and, for outgoing scenarios, the address to connect to (argv). */
static int g_port;
static const char *g_addr;

static inline void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void say(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  putchar('\n');
  fflush(stdout);
}

static inline void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static inline void fail(const char *fmt, ...) {
  int e = errno;
  va_list ap;
  printf("FAIL ");
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  printf(" (errno %d %s)\n", e, strerrorname_np(e) ? strerrorname_np(e) : "?");
  fflush(stdout);
  _exit(1);
}

/* The errno's name (ECONNREFUSED), never its number, so the line reads the same everywhere. */
static inline const char *ename(int e) {
  if (e == 0) return "0";
  const char *n = strerrorname_np(e);
  return n ? n : "E?";
}

/* `s` as a C string literal body: printable ASCII kept, the rest escaped. */
static inline const char *esc(const char *s, size_t n) {
  static char out[4][1024];
  static int which;
  char *o = out[which++ & 3];
  size_t j = 0;
  for (size_t i = 0; i < n && j + 5 < sizeof out[0]; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch == '\n') {
      o[j++] = '\\';
      o[j++] = 'n';
    } else if (ch == '"' || ch == '\\') {
      o[j++] = '\\';
      o[j++] = (char)ch;
    } else if (isprint(ch)) {
      o[j++] = (char)ch;
    } else {
      j += (size_t)snprintf(o + j, 5, "\\x%02x", ch);
    }
  }
  o[j] = 0;
  return o;
}

/* `what: -1 EAGAIN` or `what: 5 "hello"`. */
static inline void say_io(const char *what, ssize_t n, const char *buf) {
  if (n < 0) say("%s: -1 %s", what, ename(errno));
  else say("%s: %zd \"%s\"", what, n, esc(buf, (size_t)n));
}

/* `what: 0` or `what: -1 EINVAL`. */
static inline void say_rc(const char *what, int rc) {
  if (rc < 0) say("%s: -1 %s", what, ename(errno));
  else say("%s: %d", what, rc);
}

static inline const char *epoll_bits(uint32_t ev) {
  static char out[4][160];
  static int which;
  char *o = out[which++ & 3];
  static const struct {
    uint32_t bit;
    const char *name;
  } names[] = {
      {EPOLLIN, "EPOLLIN"},   {EPOLLPRI, "EPOLLPRI"},     {EPOLLOUT, "EPOLLOUT"},
      {EPOLLERR, "EPOLLERR"}, {EPOLLHUP, "EPOLLHUP"},     {EPOLLRDHUP, "EPOLLRDHUP"},
      {EPOLLRDNORM, "EPOLLRDNORM"}, {EPOLLWRNORM, "EPOLLWRNORM"},
  };
  o[0] = 0;
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    if (ev & names[i].bit) {
      if (o[0]) strcat(o, "|");
      strcat(o, names[i].name);
      ev &= ~names[i].bit;
    }
  }
  if (ev) snprintf(o + strlen(o), 24, "%s0x%x", o[0] ? "|" : "", ev);
  if (!o[0]) strcpy(o, "0");
  return o;
}

static inline const char *poll_bits(short ev) {
  static char out[4][160];
  static int which;
  char *o = out[which++ & 3];
  static const struct {
    short bit;
    const char *name;
  } names[] = {
      {POLLIN, "POLLIN"},   {POLLPRI, "POLLPRI"},   {POLLOUT, "POLLOUT"},
      {POLLERR, "POLLERR"}, {POLLHUP, "POLLHUP"},   {POLLNVAL, "POLLNVAL"},
      {POLLRDHUP, "POLLRDHUP"},
  };
  o[0] = 0;
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    if (ev & names[i].bit) {
      if (o[0]) strcat(o, "|");
      strcat(o, names[i].name);
      ev = (short)(ev & ~names[i].bit);
    }
  }
  if (ev) snprintf(o + strlen(o), 24, "%s0x%x", o[0] ? "|" : "", (unsigned)(unsigned short)ev);
  if (!o[0]) strcpy(o, "0");
  return o;
}

/*
 * `label: N name:EVENTS ...` for an epoll_wait result whose data.u32 indexes `names`, the
 * entries sorted by name (the order within one epoll_wait array is not what is tested).
 */
static inline void say_epoll(const char *label, int n, const struct epoll_event *ev,
                             const char *const *names) {
  if (n < 0) {
    say("%s: -1 %s", label, ename(errno));
    return;
  }
  char line[512];
  int idx[64];
  int m = n < 64 ? n : 64;
  for (int i = 0; i < m; i++) idx[i] = i;
  for (int i = 1; i < m; i++) {
    for (int j = i; j > 0 && strcmp(names[ev[idx[j]].data.u32], names[ev[idx[j - 1]].data.u32]) < 0; j--) {
      int t = idx[j];
      idx[j] = idx[j - 1];
      idx[j - 1] = t;
    }
  }
  size_t off = (size_t)snprintf(line, sizeof line, "%s: %d", label, n);
  for (int i = 0; i < m && off < sizeof line; i++) {
    off += (size_t)snprintf(line + off, sizeof line - off, " %s:%s", names[ev[idx[i]].data.u32],
                            epoll_bits(ev[idx[i]].events));
  }
  say("%s", line);
}

static inline void msleep(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
  }
}

/* Milliseconds on the monotonic clock. */
static inline uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static inline void write_all(int fd, const void *buf, size_t n) {
  const char *p = buf;
  while (n > 0) {
    ssize_t k = write(fd, p, n);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) fail("write_all");
    p += k;
    n -= (size_t)k;
  }
}

/* Reads exactly n bytes (or fails). */
static inline void read_exact(int fd, void *buf, size_t n) {
  char *p = buf;
  while (n > 0) {
    ssize_t k = read(fd, p, n);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) fail("read_exact");
    if (k == 0) fail("read_exact: EOF with %zu bytes missing", n);
    p += k;
    n -= (size_t)k;
  }
}

/* A one-byte message of the scenario's own protocol, sent or awaited without a line of output. */
static inline void send_token(int fd, char t) { write_all(fd, &t, 1); }

static inline void expect_token(int fd, char t) {
  char got;
  read_exact(fd, &got, 1);
  if (got != t) fail("expected token '%c', got '%c'", t, got);
}

static inline void checkpoint(void) {
  static int done;
  if (done || !getenv("ORACLE_CHECKPOINT")) return;
  done = 1;
  say("#checkpoint");
  char c;
  while (read(0, &c, 1) == 1 && c != '\n') {
  }
}

static inline struct sockaddr_in sin_of(const char *addr, int port) {
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1) fail("bad address %s", addr);
  return sa;
}

/* A listener on 0.0.0.0:port with SO_REUSEADDR; prints nothing (see listen_on). */
static inline int make_listener(int port) {
  int l = socket(AF_INET, SOCK_STREAM, 0);
  if (l < 0) fail("socket");
  int one = 1;
  if (setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0) fail("SO_REUSEADDR");
  struct sockaddr_in sa = sin_of("0.0.0.0", port);
  if (bind(l, (struct sockaddr *)&sa, sizeof sa) < 0) fail("bind 0.0.0.0:%d", port);
  if (listen(l, 16) < 0) fail("listen");
  return l;
}

/* The listener, then `listen: ok`: the test starts the peer on that line. */
static inline int listen_on(int port) {
  int l = make_listener(port);
  say("listen: ok");
  return l;
}

/* A blocking accept that must succeed: `accept: ok`, then the checkpoint. */
static inline int accept_one(int l) {
  int c;
  do c = accept(l, NULL, NULL);
  while (c < 0 && errno == EINTR);
  if (c < 0) fail("accept");
  say("accept: ok");
  checkpoint();
  return c;
}

/* A blocking connect to addr:port that must succeed: `connect: 0`, then the checkpoint. */
static inline int connect_out(const char *addr, int port) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  if (s < 0) fail("socket");
  struct sockaddr_in sa = sin_of(addr, port);
  if (connect(s, (struct sockaddr *)&sa, sizeof sa) < 0) fail("connect %s:%d", addr, port);
  say("connect: 0");
  checkpoint();
  return s;
}

static inline void set_nonblock(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) fail("O_NONBLOCK");
}

/* Waits until fd is readable (poll, no output). */
static inline void wait_readable(int fd) {
  struct pollfd p = {fd, POLLIN, 0};
  int n;
  do n = poll(&p, 1, 5000);
  while (n < 0 && errno == EINTR);
  if (n != 1) fail("wait_readable: %d", n);
}

/* The byte pattern of the bulk scenarios: byte i of the stream. */
static inline unsigned char pattern_at(size_t i) { return (unsigned char)((i * 7 + 3) & 0xff); }

/* A program's scenario table and its main. */
struct scenario {
  const char *name;
  void (*run)(void);
};

/* Runs the scenario called `name`, then says `done`. */
static inline int run_scenario(const char *name, const struct scenario *table, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (strcmp(table[i].name, name) == 0) {
      table[i].run();
      say("done");
      return 0;
    }
  }
  say("FAIL unknown scenario %s", name);
  return 2;
}

/* The program under test: SCENARIO PORT [ADDRESS]. */
static inline int oracle_main(int argc, char **argv, const struct scenario *table, size_t n) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s SCENARIO PORT [ADDRESS]\n", argv[0]);
    return 2;
  }
  g_port = atoi(argv[2]);
  g_addr = argc > 3 ? argv[3] : "0.0.0.0";
  return run_scenario(argv[1], table, n);
}

/* A peer in the namespace: SCENARIO ADDRESS PORT (the server's address in g_addr). */
static inline int peer_main(int argc, char **argv, const struct scenario *table, size_t n) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s SCENARIO ADDRESS PORT\n", argv[0]);
    return 2;
  }
  g_addr = argv[2];
  g_port = atoi(argv[3]);
  return run_scenario(argv[1], table, n);
}

/* Reads exactly n bytes (at most 63) and prints them, or EOF / the error, without failing. */
static inline void say_read(const char *what, int fd, size_t n) {
  char buf[64];
  size_t got = 0;
  while (got < n) {
    ssize_t k = read(fd, buf + got, n - got);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) {
      say("%s: -1 %s after %zu bytes", what, ename(errno), got);
      return;
    }
    if (k == 0) {
      say("%s: EOF after %zu bytes", what, got);
      return;
    }
    got += (size_t)k;
  }
  say("%s: \"%s\"", what, esc(buf, n));
}

#endif

/*
 * The other side of every shim oracle scenario, run in the client namespace with plain kernel
 * TCP. Usage: peer SCENARIO ADDRESS PORT. ADDRESS is the server's (the program under test
 * listens) or, for the outgoing scenarios, the peer's own (it listens, the program connects).
 *
 * Each scenario is a short script of steps separated by spaces, acting on the current
 * connection (connections are numbered in the order they are made):
 *   c      connect to ADDRESS:PORT            C   the same from source port PORT+1 (+ names)
 *   l      listen on ADDRESS:PORT             a   accept              A  accept (+ its address)
 *   n      print "listen: none" (nothing listens: the program is refused)
 *   r<N>   receive exactly N bytes            e   receive until EOF
 *   R      one recv, its result (a reset: -1 ECONNRESET)
 *   s<T>   send the text T                    w<MS>  sleep
 *   h      shutdown(SHUT_WR)                  x   close
 *   @<I>   make connection I current          B<N>  receive N bytes of the bulk pattern
 *   F      receive the sendfile scenario's stream until EOF and check it
 *   E<N>   N times: receive one byte, send 'q'; one line at the end
 * Every step prints one line; the script's end prints `done`.
 */
#include "common.h"

static const struct {
  const char *name;
  const char *script;
} SCRIPTS[] = {
    {"epoll-lt", "c r1 shello r1 x"},
    {"epoll-et", "c r1 sone r1 stwo r1 sthree r1 x"},
    {"epoll-oneshot", "c r1 sx r1 sy r1 x"},
    {"epoll-exclusive", "c r1 c e @0 e"},
    {"epoll-nested", "c r1 sn r1 x"},
    {"epoll-mixed", "c r1 ss r1 st r1 x"},
    {"epoll-maxevents", "c r1 sm r1 x"},
    {"epoll-after-poll", "c E600 r1 x"},
    {"poll-mixed", "c r1 sq r1 x"},
    {"select-mixed", "c r1 ss r1 x"},
    {"pselect-mixed", "c r1 ss r1 x"},
    {"blocking-io", "c w100 sping r4 w100 B1048576 sbye h e"},
    {"connect-blocking", "l a r2 syo e"},
    {"connect-refused", "n"},
    {"eintr-epoll", "c r1 sz e"},
    {"eintr-read", "c r1 w300 sr x"},
    {"msg-peek", "c r1 speekaboo r1 x"},
    {"msg-waitall", "c r1 sabc w100 sdefghij r1 sxy x"},
    {"fionread", "c r1 s12345 r1 x"},
    {"readv-writev", "c r1 sheaderbody! r11 x"},
    {"sendmsg-recvmsg", "c r1 sabcdef e x"},
    {"sendfile", "c F"},
    {"raw-syscall", "c r1 shello r2 e"},
    {"splice", "c r8 sback e"},
    {"shutdown-wr", "c e safter x"},
    {"shutdown-rd", "c r1 slate r1 x"},
    {"dup2", "c s1 c s2 @1 e @0 svia r4 e"},
    {"close-epoll", "c e"},
    {"close-unread", "c sabc R"},
    {"fork-shared", "c shi e"},
    {"names", "C r1 x"},
    {"names-out", "l A r1 x"},
    {"sockopts", "c r1 x"},
    {"linger-zero", "c sx R"},
};

static int conns[8];
static int nconns, cur = -1, listener = -1;

static int current(void) {
  if (cur < 0) fail("no connection");
  return conns[cur];
}

static void add_conn(int fd) {
  if (nconns == 8) fail("too many connections");
  conns[nconns] = fd;
  cur = nconns++;
}

static void on_timeout(int sig) {
  (void)sig;
  static const char msg[] = "FAIL peer timed out\n";
  if (write(1, msg, sizeof msg - 1) < 0) _exit(1);
  _exit(1);
}

static void say_name(const char *what, const struct sockaddr_in *sa) {
  char addr[INET_ADDRSTRLEN] = "";
  inet_ntop(AF_INET, &sa->sin_addr, addr, sizeof addr);
  say("%s: %s port=%d%s", what, sa->sin_family == AF_INET ? "AF_INET" : "other",
      ntohs(sa->sin_port), strcmp(addr, g_addr) == 0 ? " addr=argv" : "");
}

static void do_connect(int bind_next_port) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  if (s < 0) fail("socket");
  if (bind_next_port) {
    int one = 1;
    if (setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0) fail("SO_REUSEADDR");
    struct sockaddr_in me = sin_of("0.0.0.0", g_port + 1);
    if (bind(s, (struct sockaddr *)&me, sizeof me) < 0) fail("bind port %d", g_port + 1);
  }
  struct sockaddr_in sa = sin_of(g_addr, g_port);
  if (connect(s, (struct sockaddr *)&sa, sizeof sa) < 0) {
    say("connect: -1 %s", ename(errno));
    fail("connect");
  }
  say("connect: 0");
  add_conn(s);
  if (bind_next_port) {
    struct sockaddr_in got;
    socklen_t len = sizeof got;
    if (getsockname(s, (struct sockaddr *)&got, &len) < 0) fail("getsockname");
    say_name("getsockname", &got);
    len = sizeof got;
    if (getpeername(s, (struct sockaddr *)&got, &len) < 0) fail("getpeername");
    say_name("getpeername", &got);
  }
}

static void do_listen(void) {
  listener = socket(AF_INET, SOCK_STREAM, 0);
  if (listener < 0) fail("socket");
  int one = 1;
  if (setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0) fail("SO_REUSEADDR");
  struct sockaddr_in sa = sin_of(g_addr, g_port);
  if (bind(listener, (struct sockaddr *)&sa, sizeof sa) < 0) fail("bind %s:%d", g_addr, g_port);
  if (listen(listener, 4) < 0) fail("listen");
  say("listen: ok");
}

static void do_accept(int with_address) {
  struct sockaddr_in from;
  socklen_t len = sizeof from;
  int c = accept(listener, (struct sockaddr *)&from, &len);
  if (c < 0) fail("accept");
  say("accept: ok");
  if (with_address) say_name("accept address", &from);
  add_conn(c);
}

static void do_recv_exact(size_t n) {
  char buf[256];
  if (n > sizeof buf) fail("r%zu too long", n);
  size_t got = 0;
  while (got < n) {
    ssize_t k = recv(current(), buf + got, n - got, 0);
    if (k <= 0) {
      say("recv: %zd %s after \"%s\"", k, k < 0 ? ename(errno) : "EOF", esc(buf, got));
      fail("short receive");
    }
    got += (size_t)k;
  }
  say("recv: \"%s\"", esc(buf, n));
}

static void do_recv_eof(void) {
  char buf[512];
  size_t got = 0;
  for (;;) {
    ssize_t k = recv(current(), buf + got, sizeof buf - got, 0);
    if (k < 0) {
      say("recv until EOF: -1 %s after \"%s\"", ename(errno), esc(buf, got));
      return;
    }
    if (k == 0) break;
    got += (size_t)k;
    if (got == sizeof buf) fail("more than %zu bytes before EOF", sizeof buf);
  }
  say("recv until EOF: %zu \"%s\"", got, esc(buf, got));
}

static void do_recv_once(void) {
  char buf[64];
  ssize_t k = recv(current(), buf, sizeof buf, 0);
  say_io("recv", k, buf);
}

static void do_bulk(size_t n) {
  static char buf[65536];
  size_t got = 0, bad = 0;
  while (got < n) {
    size_t want = n - got < sizeof buf ? n - got : sizeof buf;
    ssize_t k = recv(current(), buf, want, 0);
    if (k <= 0) fail("bulk receive ended at %zu", got);
    for (ssize_t i = 0; i < k; i++) bad += (unsigned char)buf[i] != pattern_at(got + (size_t)i);
    got += (size_t)k;
  }
  say("recv bulk: %zu %s", got, bad ? "CORRUPT" : "pattern ok");
}

/* The sendfile scenario sends the file's bytes 0..10000, then 9000..10000, then 0..100. */
static void do_sendfile_stream(void) {
  static char buf[20000];
  size_t got = 0;
  for (;;) {
    ssize_t k = recv(current(), buf + got, sizeof buf - got, 0);
    if (k < 0) fail("recv");
    if (k == 0) break;
    got += (size_t)k;
    if (got == sizeof buf) fail("too much");
  }
  size_t bad = 0, at = 0;
  for (size_t i = 0; i < 10000; i++) bad += at < got && (unsigned char)buf[at++] != pattern_at(i);
  for (size_t i = 9000; i < 10000; i++) bad += at < got && (unsigned char)buf[at++] != pattern_at(i);
  for (size_t i = 0; i < 100; i++) bad += at < got && (unsigned char)buf[at++] != pattern_at(i);
  say("recv until EOF: %zu %s", got, bad || got != 11100 ? "WRONG" : "file bytes in order");
}

static void do_echo_rounds(int n) {
  for (int i = 0; i < n; i++) {
    char b;
    if (recv(current(), &b, 1, MSG_WAITALL) != 1) fail("echo round %d: no byte", i);
    if (send(current(), "q", 1, MSG_NOSIGNAL) != 1) fail("echo round %d: send", i);
  }
  say("echoed: %d", n);
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s SCENARIO ADDRESS PORT\n", argv[0]);
    return 2;
  }
  g_addr = argv[2];
  g_port = atoi(argv[3]);
  signal(SIGALRM, on_timeout);
  alarm(6); /* the test's own deadline is 8 s */
  const char *script = NULL;
  for (size_t i = 0; i < sizeof SCRIPTS / sizeof SCRIPTS[0]; i++) {
    if (strcmp(SCRIPTS[i].name, argv[1]) == 0) script = SCRIPTS[i].script;
  }
  if (!script) {
    say("FAIL unknown scenario %s", argv[1]);
    return 2;
  }
  char steps[256];
  snprintf(steps, sizeof steps, "%s", script);
  char *save = NULL;
  for (char *step = strtok_r(steps, " ", &save); step; step = strtok_r(NULL, " ", &save)) {
    const char *arg = step + 1;
    switch (step[0]) {
    case 'c': do_connect(0); break;
    case 'C': do_connect(1); break;
    case 'l': do_listen(); break;
    case 'a': do_accept(0); break;
    case 'A': do_accept(1); break;
    case 'n': say("listen: none"); break;
    case 'r': do_recv_exact((size_t)atoi(arg)); break;
    case 'e': do_recv_eof(); break;
    case 'R': do_recv_once(); break;
    case 's': say_rc("send", (int)send(current(), arg, strlen(arg), MSG_NOSIGNAL)); break;
    case 'w': msleep(atoi(arg)); break;
    case 'h': say_rc("shutdown SHUT_WR", shutdown(current(), SHUT_WR)); break;
    case 'x':
      say_rc("close", close(current()));
      conns[cur] = -1;
      break;
    case '@':
      cur = atoi(arg);
      if (cur < 0 || cur >= nconns) fail("no connection %d", cur);
      say("connection %d", cur);
      break;
    case 'B': do_bulk((size_t)atol(arg)); break;
    case 'F': do_sendfile_stream(); break;
    case 'E': do_echo_rounds(atoi(arg)); break;
    default: fail("bad step %s", step);
    }
  }
  for (int i = 0; i < nconns; i++) {
    if (conns[i] >= 0) close(conns[i]);
  }
  if (listener >= 0) close(listener);
  say("done");
  return 0;
}

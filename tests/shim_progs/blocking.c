/*
 * Blocking calls and their failures: blocking accept, read and write (1 MiB, more than the
 * send buffer); blocking connect out; a non-blocking connect to a refused port (EINPROGRESS,
 * then SO_ERROR once); epoll_wait and read interrupted by SIGALRM.
 * Usage: blocking SCENARIO PORT [PEER-ADDRESS].
 */
#include "common.h"

#include <sys/time.h>

static void read_line(const char *what, int fd) {
  char buf[64];
  ssize_t n = read(fd, buf, sizeof buf);
  say_io(what, n, buf);
}

static void say_so_error(int s) {
  int err = -1;
  socklen_t len = sizeof err;
  if (getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len) < 0) say("SO_ERROR: -1 %s", ename(errno));
  else say("SO_ERROR: %s", ename(err));
}

static void sc_blocking_io(void) {
  int l = listen_on(g_port);
  int c = accept_one(l); /* blocks until the peer connects */
  read_line("read", c);  /* blocks: the peer sends after 100 ms */
  say_rc("write", (int)write(c, "pong", 4));
  size_t big = 1 << 20;
  char *buf = malloc(big);
  if (!buf) fail("malloc");
  for (size_t i = 0; i < big; i++) buf[i] = (char)pattern_at(i);
  /* Blocking write of more than fits: returns only when all of it is queued. */
  ssize_t n = write(c, buf, big);
  say("write: %zd", n);
  free(buf);
  read_line("read", c);
  read_line("read", c);
  close(c);
  close(l);
}

static void sc_connect_blocking(void) {
  int s = connect_out(g_addr, g_port);
  say_so_error(s);
  say_rc("write", (int)write(s, "hi", 2));
  read_line("read", s);
  say_rc("close", close(s));
}

static void sc_connect_refused(void) {
  struct sockaddr_in sa = sin_of(g_addr, g_port);
  int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (s < 0) fail("socket");
  say_rc("connect", connect(s, (struct sockaddr *)&sa, sizeof sa));
  struct pollfd p = {s, POLLOUT, 0};
  int n = poll(&p, 1, 3000);
  say("poll: %d %s", n, poll_bits(p.revents));
  say_so_error(s); /* the error, once */
  say_so_error(s); /* then cleared */
  say_rc("send", (int)send(s, "x", 1, MSG_NOSIGNAL));
  struct sockaddr_in peer;
  socklen_t len = sizeof peer;
  say_rc("getpeername", getpeername(s, (struct sockaddr *)&peer, &len));
  close(s);

  /* The common idiom: a second connect() reports the outcome (and consumes the error). */
  s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (s < 0) fail("socket");
  say_rc("connect", connect(s, (struct sockaddr *)&sa, sizeof sa));
  p = (struct pollfd){s, POLLOUT, 0};
  n = poll(&p, 1, 3000);
  say("poll: %d %s", n, poll_bits(p.revents));
  say_rc("connect again", connect(s, (struct sockaddr *)&sa, sizeof sa));
  say_so_error(s);
  close(s);

  /* A blocking connect reports it directly. */
  s = socket(AF_INET, SOCK_STREAM, 0);
  if (s < 0) fail("socket");
  say_rc("connect", connect(s, (struct sockaddr *)&sa, sizeof sa));
  say_so_error(s);
  close(s);
}

static volatile sig_atomic_t alarms;

static void on_alarm(int sig) {
  (void)sig;
  alarms++;
}

static void alarm_in(int ms, int flags) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_alarm;
  sa.sa_flags = flags;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGALRM, &sa, NULL) < 0) fail("sigaction");
  struct itimerval it = {{0, 0}, {ms / 1000, (ms % 1000) * 1000}};
  if (setitimer(ITIMER_REAL, &it, NULL) < 0) fail("setitimer");
}

static void sc_eintr_epoll(void) {
  int l = listen_on(g_port), c = accept_one(l);
  int ep = epoll_create1(0);
  if (ep < 0) fail("epoll_create1");
  struct epoll_event ev = {.events = EPOLLIN, .data.u32 = 0};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev) < 0) fail("epoll_ctl");
  static const char *const names[] = {"sock"};
  struct epoll_event out[4];
  alarm_in(100, 0);
  say_epoll("epoll_wait", epoll_wait(ep, out, 4, -1), out, names);
  say("alarms: %d", (int)alarms);
  alarm_in(100, SA_RESTART); /* epoll_wait is never restarted, SA_RESTART or not */
  say_epoll("epoll_wait", epoll_wait(ep, out, 4, -1), out, names);
  say("alarms: %d", (int)alarms);
  send_token(c, 'g');
  say_epoll("epoll_wait", epoll_wait(ep, out, 4, -1), out, names);
  read_line("read", c);
  close(c);
  close(l);
  close(ep);
}

static void sc_eintr_read(void) {
  int l = listen_on(g_port), c = accept_one(l);
  alarm_in(100, 0);
  read_line("read", c); /* no SA_RESTART: EINTR */
  say("alarms: %d", (int)alarms);
  alarm_in(100, SA_RESTART);
  send_token(c, 'g'); /* the peer sends 300 ms later: the read is restarted after the signal */
  read_line("read", c);
  say("alarms: %d", (int)alarms);
  read_line("read", c);
  close(c);
  close(l);
}

int main(int argc, char **argv) {
  static const struct scenario table[] = {
      {"blocking-io", sc_blocking_io},     {"connect-blocking", sc_connect_blocking},
      {"connect-refused", sc_connect_refused}, {"eintr-epoll", sc_eintr_epoll},
      {"eintr-read", sc_eintr_read},
  };
  return oracle_main(argc, argv, table, sizeof table / sizeof table[0]);
}

/*
 * A connection's life around the fd: shutdown(SHUT_WR) and (SHUT_RD), dup2 onto an offloaded
 * fd, close while another thread waits in epoll_wait, close with unread data (RST), fork with
 * the socket used in both processes. Usage: lifecycle SCENARIO PORT.
 */
#include "common.h"

static void read_line(const char *what, int fd) {
  char buf[64];
  ssize_t n = read(fd, buf, sizeof buf);
  say_io(what, n, buf);
}

static void say_revents(const char *what, int fd, short events) {
  struct pollfd p = {fd, events, 0};
  int n = poll(&p, 1, 0);
  say("%s: %d %s", what, n, poll_bits(p.revents));
}

static volatile sig_atomic_t sigpipes;

static void on_pipe(int sig) {
  (void)sig;
  sigpipes++;
}

static void sc_shutdown_wr(void) {
  int l = listen_on(g_port), c = accept_one(l);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_pipe;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGPIPE, &sa, NULL) < 0) fail("sigaction");
  say_rc("shutdown SHUT_WR", shutdown(c, SHUT_WR));
  read_line("read", c); /* the peer saw EOF and still sends */
  say_rc("write", (int)write(c, "x", 1));
  say("sigpipe: %d", (int)sigpipes);
  say_rc("send NOSIGNAL", (int)send(c, "x", 1, MSG_NOSIGNAL));
  say("sigpipe: %d", (int)sigpipes);
  read_line("read", c); /* the peer's FIN */
  say_rc("shutdown SHUT_WR again", shutdown(c, SHUT_WR)); /* both FINs done: TIME_WAIT */
  say_revents("poll", c, POLLIN | POLLOUT | POLLRDHUP);
  close(c);
  close(l);
}

static void sc_shutdown_rd(void) {
  int l = listen_on(g_port), c = accept_one(l);
  say_rc("shutdown SHUT_RD", shutdown(c, SHUT_RD));
  read_line("read", c); /* at once, nothing buffered */
  say_revents("poll", c, POLLIN | POLLOUT | POLLRDHUP);
  say_rc("write", (int)write(c, "g", 1)); /* the other direction still works */
  /* Data the peer sends after SHUT_RD: poll cannot tell (POLLIN is already up), so look. */
  char buf[64];
  ssize_t n = 0;
  for (int i = 0; i < 200 && n == 0; i++) {
    n = read(c, buf, sizeof buf);
    if (n == 0) msleep(10);
  }
  say_io("read after the peer sent", n, buf);
  send_token(c, 'a');
  read_line("read", c);
  close(c);
  close(l);
}

static void sc_dup2(void) {
  int l = listen_on(g_port);
  int c1 = accept_one(l);
  int c2 = accept(l, NULL, NULL);
  if (c2 < 0) fail("accept");
  say("accept: ok");
  read_line("read c1", c1);
  read_line("read c2", c2);
  if (fcntl(c1, F_SETFD, FD_CLOEXEC) < 0) fail("F_SETFD");
  /* dup2 onto the second connection's fd: its connection is closed, the fd now reads c1's
   * (and, as any dup2, without FD_CLOEXEC). */
  int r = dup2(c1, c2);
  say("dup2: %s", r == c2 ? "ok" : ename(errno));
  int fl = fcntl(c2, F_GETFD);
  say("FD_CLOEXEC: %d", fl < 0 ? -1 : (fl & FD_CLOEXEC) != 0);
  read_line("read c2", c2); /* the peer sent on its first connection */
  say_rc("close c1", close(c1)); /* the connection lives on through c2 */
  say_rc("write c2", (int)write(c2, "back", 4));
  say_rc("close c2", close(c2));
  close(l);
}

struct waiter {
  int ep;
  int n;
  int err;
};

static void *wait_thread(void *arg) {
  struct waiter *w = arg;
  struct epoll_event ev[4];
  w->n = epoll_wait(w->ep, ev, 4, 600);
  w->err = errno;
  return NULL;
}

static void sc_close_epoll(void) {
  int l = listen_on(g_port), c = accept_one(l);
  int ep = epoll_create1(0);
  if (ep < 0) fail("epoll_create1");
  struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u32 = 0};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev) < 0) fail("epoll_ctl");
  struct waiter w = {ep, -2, 0};
  pthread_t t;
  if (pthread_create(&t, NULL, wait_thread, &w)) fail("pthread_create");
  msleep(100);
  say_rc("close", close(c)); /* the closed fd leaves the set: the waiter sees nothing */
  pthread_join(t, NULL);
  if (w.n < 0) say("epoll_wait in the other thread: -1 %s", ename(w.err));
  else say("epoll_wait in the other thread: %d", w.n);
  say_rc("epoll_ctl DEL", epoll_ctl(ep, EPOLL_CTL_DEL, c, &ev));
  close(ep);
  close(l);
}

static void sc_close_unread(void) {
  int l = listen_on(g_port), c = accept_one(l);
  wait_readable(c);
  say_rc("close with unread data", close(c)); /* RST, not FIN */
  close(l);
}

static void sc_fork(void) {
  int l = listen_on(g_port), c = accept_one(l);
  fflush(stdout);
  pid_t pid = fork();
  if (pid < 0) fail("fork");
  if (pid == 0) {
    read_line("child read", c);
    say_rc("child write", (int)write(c, "child\n", 6));
    _exit(0); /* the parent still holds the connection */
  }
  int st = 0;
  if (waitpid(pid, &st, 0) != pid) fail("waitpid");
  say("child exit: %d", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
  say_rc("parent write", (int)write(c, "parent\n", 7));
  say_rc("close", close(c));
  close(l);
}

int main(int argc, char **argv) {
  static const struct scenario table[] = {
      {"shutdown-wr", sc_shutdown_wr}, {"shutdown-rd", sc_shutdown_rd},
      {"dup2", sc_dup2},               {"close-epoll", sc_close_epoll},
      {"close-unread", sc_close_unread}, {"fork-shared", sc_fork},
  };
  return oracle_main(argc, argv, table, sizeof table / sizeof table[0]);
}

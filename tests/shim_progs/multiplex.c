/*
 * poll, select and pselect over a set mixing an accepted socket and a pipe (a kernel fd the
 * shim must leave alone). Usage: multiplex SCENARIO PORT.
 */
#include "common.h"

#include <sys/select.h>

struct later {
  int fd;
  int ms;
};

static void *write_pipe_later(void *arg) {
  struct later *w = arg;
  msleep(w->ms);
  write_all(w->fd, "w", 1);
  return NULL;
}

static pthread_t pipe_later(struct later *w) {
  pthread_t t;
  if (pthread_create(&t, NULL, write_pipe_later, w)) fail("pthread_create");
  return t;
}

static void read_line(const char *what, int fd) {
  char buf[64];
  ssize_t n = read(fd, buf, sizeof buf);
  say_io(what, n, buf);
}

static void say_poll(int n, const struct pollfd *fds, const char *const *names, int count) {
  if (n < 0) {
    say("poll: -1 %s", ename(errno));
    return;
  }
  char line[256];
  size_t off = (size_t)snprintf(line, sizeof line, "poll: %d", n);
  for (int i = 0; i < count; i++) {
    off += (size_t)snprintf(line + off, sizeof line - off, " %s=%s", names[i],
                            poll_bits(fds[i].revents));
  }
  say("%s", line);
}

static void sc_poll(void) {
  int l = listen_on(g_port), c = accept_one(l);
  int p[2];
  if (pipe(p) < 0) fail("pipe");
  static const char *const names[] = {"sock", "pipe"};
  struct pollfd fds[2] = {{c, POLLIN | POLLRDHUP, 0}, {p[0], POLLIN, 0}};
  say_poll(poll(fds, 2, 0), fds, names, 2);
  send_token(c, 'g');
  say_poll(poll(fds, 2, -1), fds, names, 2);
  write_all(p[1], "p", 1);
  say_poll(poll(fds, 2, 0), fds, names, 2);
  read_line("read sock", c);
  read_line("read pipe", p[0]);
  say_poll(poll(fds, 2, 0), fds, names, 2);
  struct pollfd out = {c, POLLOUT, 0};
  static const char *const sock_only[] = {"sock"};
  say_poll(poll(&out, 1, 0), &out, sock_only, 1);
  /* The pipe alone wakes a blocking poll that also watches the socket. */
  struct later w = {p[1], 100};
  pthread_t t = pipe_later(&w);
  say_poll(poll(fds, 2, -1), fds, names, 2);
  pthread_join(t, NULL);
  read_line("read pipe", p[0]);
  /* A negative fd is ignored; a closed one is POLLNVAL. */
  int d = dup(c);
  if (d < 0) fail("dup");
  close(d);
  static const char *const odd[] = {"negative", "closed"};
  struct pollfd bad[2] = {{-1, POLLIN, 0}, {d, POLLIN, 0}};
  say_poll(poll(bad, 2, 0), bad, odd, 2);
  send_token(c, 'a');
  say_poll(poll(fds, 2, -1), fds, names, 2); /* the FIN */
  read_line("read sock", c);
  close(p[1]);
  say_poll(poll(fds, 2, 0), fds, names, 2); /* the pipe's writer is gone: POLLHUP */
  close(c);
  close(l);
  close(p[0]);
}

/* `label: N sock=rw pipe=r` (`-` when in no set). */
static void say_select(const char *label, int n, int c, int pr, const fd_set *r, const fd_set *w) {
  if (n < 0) {
    say("%s: -1 %s", label, ename(errno));
    return;
  }
  char cs[3] = {0}, ps[3] = {0};
  int i = 0;
  if (r && FD_ISSET(c, r)) cs[i++] = 'r';
  if (w && FD_ISSET(c, w)) cs[i++] = 'w';
  i = 0;
  if (r && FD_ISSET(pr, r)) ps[i++] = 'r';
  if (w && FD_ISSET(pr, w)) ps[i++] = 'w';
  say("%s: %d sock=%s pipe=%s", label, n, cs[0] ? cs : "-", ps[0] ? ps : "-");
}

static int max2(int a, int b) { return a > b ? a : b; }

/* The read set of every select: the socket and the pipe's read end. */
static void reads(fd_set *r, int c, int pr) {
  FD_ZERO(r);
  FD_SET(c, r);
  FD_SET(pr, r);
}

static void sc_select(void) {
  int l = listen_on(g_port), c = accept_one(l);
  int p[2];
  if (pipe(p) < 0) fail("pipe");
  int nfds = max2(c, p[0]) + 1;
  fd_set r, w;
  struct timeval tv;

  reads(&r, c, p[0]);
  tv = (struct timeval){0, 0};
  say_select("select", select(nfds, &r, NULL, NULL, &tv), c, p[0], &r, NULL);
  send_token(c, 'g');
  reads(&r, c, p[0]);
  say_select("select", select(nfds, &r, NULL, NULL, NULL), c, p[0], &r, NULL);
  write_all(p[1], "p", 1);
  reads(&r, c, p[0]);
  FD_ZERO(&w);
  FD_SET(c, &w);
  tv = (struct timeval){0, 0};
  say_select("select", select(nfds, &r, &w, NULL, &tv), c, p[0], &r, &w);
  read_line("read sock", c);
  read_line("read pipe", p[0]);
  reads(&r, c, p[0]);
  tv = (struct timeval){0, 50000};
  say_select("select", select(nfds, &r, NULL, NULL, &tv), c, p[0], &r, NULL);
  say("timeout left: %ld.%06ld", (long)tv.tv_sec, (long)tv.tv_usec); /* Linux updates it */
  struct later lw = {p[1], 100};
  pthread_t t = pipe_later(&lw);
  reads(&r, c, p[0]);
  say_select("select", select(nfds, &r, NULL, NULL, NULL), c, p[0], &r, NULL);
  pthread_join(t, NULL);
  read_line("read pipe", p[0]);
  send_token(c, 'a');
  reads(&r, c, p[0]);
  say_select("select", select(nfds, &r, NULL, NULL, NULL), c, p[0], &r, NULL); /* the FIN */
  read_line("read sock", c);
  close(c);
  close(l);
  close(p[0]);
  close(p[1]);
}

static volatile sig_atomic_t usr1;

static void on_usr1(int sig) {
  (void)sig;
  usr1++;
}

static void sc_pselect(void) {
  int l = listen_on(g_port), c = accept_one(l);
  int p[2];
  if (pipe(p) < 0) fail("pipe");
  int nfds = max2(c, p[0]) + 1;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_usr1; /* no SA_RESTART */
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGUSR1, &sa, NULL) < 0) fail("sigaction");
  sigset_t blocked, empty;
  sigemptyset(&blocked);
  sigaddset(&blocked, SIGUSR1);
  sigemptyset(&empty);
  if (sigprocmask(SIG_BLOCK, &blocked, NULL) < 0) fail("sigprocmask");
  raise(SIGUSR1); /* pending while blocked */
  say("handler calls: %d", (int)usr1);
  fd_set r;
  struct timespec ts;

  /* pselect's mask unblocks the pending signal atomically: EINTR, the handler ran. */
  reads(&r, c, p[0]);
  say_select("pselect", pselect(nfds, &r, NULL, NULL, NULL, &empty), c, p[0], &r, NULL);
  say("handler calls: %d", (int)usr1);
  send_token(c, 'g');
  reads(&r, c, p[0]);
  say_select("pselect", pselect(nfds, &r, NULL, NULL, NULL, &blocked), c, p[0], &r, NULL);
  write_all(p[1], "p", 1);
  reads(&r, c, p[0]);
  ts = (struct timespec){0, 0};
  say_select("pselect", pselect(nfds, &r, NULL, NULL, &ts, &blocked), c, p[0], &r, NULL);
  read_line("read sock", c);
  read_line("read pipe", p[0]);
  reads(&r, c, p[0]);
  ts = (struct timespec){0, 0};
  say_select("pselect", pselect(nfds, &r, NULL, NULL, &ts, &blocked), c, p[0], &r, NULL);
  /* A signal kept blocked by pselect's mask does not interrupt it; the pipe ends the wait. */
  kill(getpid(), SIGUSR1);
  struct later lw = {p[1], 100};
  pthread_t t = pipe_later(&lw); /* inherits the mask: SIGUSR1 blocked */
  reads(&r, c, p[0]);
  say_select("pselect", pselect(nfds, &r, NULL, NULL, NULL, &blocked), c, p[0], &r, NULL);
  pthread_join(t, NULL);
  say("handler calls: %d", (int)usr1);
  if (sigprocmask(SIG_UNBLOCK, &blocked, NULL) < 0) fail("sigprocmask");
  say("handler calls: %d", (int)usr1);
  read_line("read pipe", p[0]);
  send_token(c, 'a');
  reads(&r, c, p[0]);
  say_select("pselect", pselect(nfds, &r, NULL, NULL, NULL, NULL), c, p[0], &r, NULL);
  read_line("read sock", c);
  close(c);
  close(l);
  close(p[0]);
  close(p[1]);
}

int main(int argc, char **argv) {
  static const struct scenario table[] = {
      {"poll-mixed", sc_poll},
      {"select-mixed", sc_select},
      {"pselect-mixed", sc_pselect},
  };
  return oracle_main(argc, argv, table, sizeof table / sizeof table[0]);
}

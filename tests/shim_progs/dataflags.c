/*
 * The data calls beyond read/write: MSG_PEEK, MSG_WAITALL, FIONREAD, readv/writev,
 * sendmsg/recvmsg, sendfile. Usage: dataflags SCENARIO PORT.
 */
#include "common.h"

#include <fcntl.h>
#include <sys/sendfile.h>
#include <sys/syscall.h>

static void say_recv(const char *what, int fd, size_t len, int flags) {
  char buf[64];
  ssize_t n = recv(fd, buf, len, flags);
  say_io(what, n, buf);
}

static void say_fionread(const char *what, int fd) {
  int v = -1;
  if (ioctl(fd, FIONREAD, &v) < 0) say("%s: -1 %s", what, ename(errno));
  else say("%s: %d", what, v);
}

static void sc_peek(void) {
  int l = listen_on(g_port), c = accept_one(l);
  send_token(c, 'g');
  say_recv("recv PEEK", c, 4, MSG_PEEK);
  say_recv("recv PEEK", c, 64, MSG_PEEK);
  say_recv("recv", c, 64, 0);
  say_recv("recv PEEK|DONTWAIT", c, 64, MSG_PEEK | MSG_DONTWAIT);
  send_token(c, 'a');
  say_recv("recv PEEK", c, 64, MSG_PEEK); /* the FIN: 0, and it stays */
  say_recv("recv", c, 64, 0);
  close(c);
  close(l);
}

static void sc_waitall(void) {
  int l = listen_on(g_port), c = accept_one(l);
  send_token(c, 'g');
  say_recv("recv WAITALL", c, 10, MSG_WAITALL); /* 3 bytes, then 7 more 100 ms later */
  send_token(c, 'a');
  say_recv("recv WAITALL", c, 10, MSG_WAITALL); /* 2 bytes and the FIN: short */
  say_recv("recv WAITALL", c, 10, MSG_WAITALL);
  close(c);
  close(l);
}

static void sc_fionread(void) {
  int l = listen_on(g_port);
  say_fionread("FIONREAD listener", l);
  int c = accept_one(l);
  say_fionread("FIONREAD", c);
  send_token(c, 'g');
  wait_readable(c);
  say_fionread("FIONREAD", c);
  say_recv("recv", c, 2, 0);
  say_fionread("FIONREAD", c);
  say_recv("recv", c, 64, 0);
  say_fionread("FIONREAD", c);
  send_token(c, 'a');
  wait_readable(c);
  say_fionread("FIONREAD at EOF", c);
  say_recv("recv", c, 64, 0);
  close(c);
  close(l);
}

static void sc_readv(void) {
  int l = listen_on(g_port), c = accept_one(l);
  send_token(c, 'g');
  wait_readable(c);
  char a[4], b[4], d[8];
  struct iovec iov[3] = {{a, sizeof a}, {b, sizeof b}, {d, sizeof d}};
  ssize_t n = readv(c, iov, 3);
  if (n < 0) {
    say("readv: -1 %s", ename(errno));
  } else {
    size_t k = (size_t)n, la = k < 4 ? k : 4, lb = k > 4 ? (k - 4 < 4 ? k - 4 : 4) : 0;
    size_t ld = k > 8 ? k - 8 : 0;
    say("readv: %zd \"%s\" \"%s\" \"%s\"", n, esc(a, la), esc(b, lb), esc(d, ld));
  }
  struct iovec out[3] = {{"one", 3}, {"two", 3}, {"three", 5}};
  say("writev: %zd", writev(c, out, 3));
  n = readv(c, iov, 3);
  say("readv: %zd", n); /* the FIN */
  close(c);
  close(l);
}

static void sc_msg(void) {
  int l = listen_on(g_port), c = accept_one(l);
  send_token(c, 'g');
  wait_readable(c);
  char a[2], b[8];
  struct iovec iov[2] = {{a, sizeof a}, {b, sizeof b}};
  struct sockaddr_in from;
  memset(&from, 0, sizeof from);
  struct msghdr m = {.msg_name = &from, .msg_namelen = sizeof from, .msg_iov = iov, .msg_iovlen = 2};
  ssize_t n = recvmsg(c, &m, 0);
  if (n < 0) say("recvmsg: -1 %s", ename(errno));
  else
    say("recvmsg: %zd \"%s\" \"%s\" flags=%d namelen=%u", n, esc(a, n < 2 ? (size_t)n : 2),
        esc(b, n > 2 ? (size_t)n - 2 : 0), m.msg_flags, (unsigned)m.msg_namelen);
  struct msghdr m2 = {.msg_iov = iov, .msg_iovlen = 2};
  n = recvmsg(c, &m2, MSG_DONTWAIT);
  say_rc("recvmsg DONTWAIT", (int)n);
  struct iovec out[2] = {{"hello ", 6}, {"world", 5}};
  struct msghdr s = {.msg_iov = out, .msg_iovlen = 2};
  say_rc("sendmsg", (int)sendmsg(c, &s, MSG_NOSIGNAL));
  /* A destination address on a connected TCP socket is ignored. */
  struct sockaddr_in elsewhere = sin_of("192.0.2.1", 9);
  say_rc("sendto with address",
         (int)sendto(c, "!", 1, MSG_NOSIGNAL, (struct sockaddr *)&elsewhere, sizeof elsewhere));
  say_rc("shutdown SHUT_WR", shutdown(c, SHUT_WR));
  struct msghdr m3 = {.msg_iov = iov, .msg_iovlen = 2};
  say_rc("recvmsg", (int)recvmsg(c, &m3, 0)); /* the FIN */
  close(c);
  close(l);
}

static void sc_sendfile(void) {
  int l = listen_on(g_port), c = accept_one(l);
  char path[] = "/tmp/pno-oracle-sendfile-XXXXXX";
  int f = mkstemp(path);
  if (f < 0) fail("mkstemp");
  unlink(path);
  char data[10000];
  for (size_t i = 0; i < sizeof data; i++) data[i] = (char)pattern_at(i);
  write_all(f, data, sizeof data);
  off_t off = 0;
  size_t total = 0;
  while (total < sizeof data) {
    ssize_t n = sendfile(c, f, &off, sizeof data - total);
    if (n <= 0) fail("sendfile");
    total += (size_t)n;
  }
  say("sendfile: %zu offset=%lld", total, (long long)off);
  off = 9000;
  ssize_t n = sendfile(c, f, &off, 5000); /* only 1000 bytes left in the file */
  say("sendfile: %zd offset=%lld", n, (long long)off);
  if (lseek(f, 0, SEEK_SET) < 0) fail("lseek");
  n = sendfile(c, f, NULL, 100); /* the file position moves instead */
  say("sendfile: %zd position=%lld", n, (long long)lseek(f, 0, SEEK_CUR));
  close(f);
  say_rc("close", close(c));
  close(l);
}

/* Raw syscall() of the socket calls: a program may bypass libc's wrappers. */
static void sc_raw_syscall(void) {
  int l = listen_on(g_port), c = accept_one(l);
  say("syscall write: %ld", syscall(SYS_write, c, "g", 1));
  char buf[16];
  size_t got = 0;
  while (got < 5) {
    long n = syscall(SYS_read, c, buf + got, 5 - got);
    if (n <= 0) fail("syscall read");
    got += (size_t)n;
  }
  say_io("syscall read", (ssize_t)got, buf);
  say("syscall sendto: %ld", syscall(SYS_sendto, c, "ok", 2, 0, NULL, 0));
  struct sockaddr_in sa;
  socklen_t len = sizeof sa;
  long r = syscall(SYS_getsockname, c, &sa, &len);
  say("syscall getsockname: %ld port=%d", r, ntohs(sa.sin_port));
  say("syscall close: %ld", syscall(SYS_close, c));
  close(l);
}

/* splice() between a pipe and the socket, both ways. */
static void sc_splice(void) {
  int l = listen_on(g_port), c = accept_one(l);
  int p[2];
  if (pipe(p) < 0) fail("pipe");
  write_all(p[1], "pipedata", 8);
  say("splice pipe->socket: %zd", splice(p[0], NULL, c, NULL, 8, 0));
  ssize_t n = splice(c, NULL, p[1], NULL, 4, 0); /* the peer's "back" */
  say("splice socket->pipe: %zd", n);
  char buf[16];
  say_io("pipe read", read(p[0], buf, sizeof buf), buf);
  close(p[0]);
  close(p[1]);
  say_rc("close", close(c));
  close(l);
}

int main(int argc, char **argv) {
  static const struct scenario table[] = {
      {"msg-peek", sc_peek},       {"msg-waitall", sc_waitall},         {"fionread", sc_fionread},
      {"readv-writev", sc_readv},  {"sendmsg-recvmsg", sc_msg},         {"sendfile", sc_sendfile},
      {"raw-syscall", sc_raw_syscall}, {"splice", sc_splice},
  };
  return oracle_main(argc, argv, table, sizeof table / sizeof table[0]);
}

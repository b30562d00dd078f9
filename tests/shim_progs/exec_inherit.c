/*
 * Sockets that outlive their image or change hands (tests/shim_exec_test.ts), against the
 * peer tests/shim_progs/exec_peer.c. Usage: exec_inherit SCENARIO PORT [UNIX-PATH].
 *
 * exec-listener, exec-listener-execl: listens, accepts c1 (reads "hello") and c2 (accept4
 *   SOCK_CLOEXEC), then execs itself (execve, or execl), naming the listener and c1 in an environment variable the way nginx's
 *   binary upgrade names its listeners (NGINX="fd;fd;"). The new image (exec-listener-after)
 *   finds both working: it answers on c1, accepts c3 on the inherited listener and serves it;
 *   c2 was closed by the exec (the peer reads EOF; the number is free: EBADF).
 * scm-rights-fork: the parent passes an accepted connection, then a listener made after the
 *   fork, to its child over a Unix socket (SCM_RIGHTS) and closes its own copies; the child
 *   serves the connection and accepts on the listener.
 * upgrade-listener: nginx's binary upgrade: the master serves c1, then forks a child that
 *   executes the binary again with the listener named in an environment of only TZ and that
 *   variable (nginx's NGINX="fd;": LD_PRELOAD and PNO_* are not passed on); the
 *   new image learns the listener's address by getsockname (nginx matches it against its
 *   configuration: 0.0.0.0 and the port, or binds anew and fails with EADDRINUSE), accepts c2
 *   on it and serves it; the old master still holds the listener meanwhile.
 * reload-handover: HAProxy's reload (master-worker, expose-fd listeners): the master forks a
 *   worker and closes its own listener; the worker serves c1; the master re-executes itself;
 *   the new image asks the old worker for the listener over their socketpair (SCM_RIGHTS),
 *   and the old worker closes its copy and exits while c2 waits in the accept queue; the new
 *   image accepts c2 on the listener it was handed and serves it (nothing queued is lost).
 * holder-dies: a forked child that shares a connection and the listener answers on the
 *   connection and is killed (SIGKILL: nothing closed); the parent, still holding both, goes
 *   on: it answers on the connection and accepts and serves a new one (a socket lives until
 *   its last holder is gone).
 * scm-send / scm-recv: two programs started apart (two applications): scm-send passes an
 *   accepted connection to scm-recv over UNIX-PATH and closes it; scm-recv reads the peer's
 *   "ping" on it and answers "pong". Whatever each call returns is printed.
 */
#include "common.h"

#include <sys/un.h>

#define INHERIT_VAR "PNO_TEST_INHERIT"

static char g_self_port[16];

/* Passes fd with one byte; the outcome as a line, printed by the caller when it may print. */
static const char *send_fd(int unix_fd, int fd, const char *what) {
  static char out[4][128];
  static int which;
  char *o = out[which++ & 3];
  char byte = 'F';
  struct iovec iov = {&byte, 1};
  union {
    struct cmsghdr h;
    char buf[CMSG_SPACE(sizeof(int))];
  } u;
  memset(&u, 0, sizeof u);
  struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                     .msg_controllen = sizeof u.buf};
  struct cmsghdr *c = CMSG_FIRSTHDR(&m);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &fd, sizeof fd);
  ssize_t n = sendmsg(unix_fd, &m, 0);
  if (n < 0) snprintf(o, sizeof out[0], "sendmsg %s: -1 %s", what, ename(errno));
  else snprintf(o, sizeof out[0], "sendmsg %s: %zd", what, n);
  return o;
}

/* The fd passed with one byte, or -1 (the outcome printed). */
static int recv_fd(int unix_fd, const char *what) {
  char byte;
  struct iovec iov = {&byte, 1};
  union {
    struct cmsghdr h;
    char buf[CMSG_SPACE(sizeof(int))];
  } u;
  struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                     .msg_controllen = sizeof u.buf};
  ssize_t n;
  do n = recvmsg(unix_fd, &m, 0);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    say("recvmsg %s: -1 %s", what, ename(errno));
    return -1;
  }
  struct cmsghdr *c = CMSG_FIRSTHDR(&m);
  if (n != 1 || !c || c->cmsg_type != SCM_RIGHTS) {
    say("recvmsg %s: %zd without a descriptor", what, n);
    return -1;
  }
  int fd;
  memcpy(&fd, CMSG_DATA(c), sizeof fd);
  say("recvmsg %s: a descriptor", what);
  return fd;
}

/* What kind of socket fd is now: its type, and whether it listens (SO_ACCEPTCONN). */
static void say_socket(const char *what, int fd) {
  int type = 0, acc = 0;
  socklen_t len = sizeof type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0) {
    say("%s: SO_TYPE -1 %s", what, ename(errno));
    return;
  }
  len = sizeof acc;
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len) < 0) {
    say("%s: SO_ACCEPTCONN -1 %s", what, ename(errno));
    return;
  }
  struct sockaddr_in sa;
  socklen_t sl = sizeof sa;
  memset(&sa, 0, sizeof sa);
  int port = getsockname(fd, (struct sockaddr *)&sa, &sl) == 0 ? ntohs(sa.sin_port) : -1;
  /* The address as a class: the listeners are bound to 0.0.0.0 (HAProxy matches the
   * listeners handed to a new process by this name); a connection's address is the one the
   * peer reached, which differs between the kernel run and the shim run. */
  uint32_t a = ntohl(sa.sin_addr.s_addr);
  const char *addr = a == INADDR_ANY ? "0.0.0.0" : a == INADDR_LOOPBACK ? "127.0.0.1" : "the address reached";
  say("%s: %s, %s, local %s port %s", what, type == SOCK_STREAM ? "SOCK_STREAM" : "other",
      acc ? "listening" : "not listening", addr,
      port == g_port ? "the scenario's" : port == g_port + 1 ? "the scenario's + 1" : "other");
}


static void say_write(const char *what, int fd, const char *text) {
  ssize_t n = send(fd, text, strlen(text), MSG_NOSIGNAL);
  if (n < 0) say("%s: -1 %s", what, ename(errno));
  else say("%s: %zd", what, n);
}

/* How the image is replaced: execve (nginx's ngx_execute_proc) or execl (a varargs wrapper). */
static void exec_listener(int use_execl) {
  int l = listen_on(g_port);
  int c1 = accept_one(l);
  say_read("c1 read", c1, 5);
  int c2;
  do c2 = accept4(l, NULL, NULL, SOCK_CLOEXEC);
  while (c2 < 0 && errno == EINTR);
  if (c2 < 0) fail("accept4");
  say("accept4 c2 with SOCK_CLOEXEC: ok");
  char var[64];
  snprintf(var, sizeof var, "%d;%d;%d;", l, c1, c2);
  if (setenv(INHERIT_VAR, var, 1) < 0) fail("setenv");
  say("exec");
  if (use_execl) {
    execl("/proc/self/exe", "exec_inherit", "exec-listener-after", g_self_port, (char *)NULL);
  } else {
    char *args[] = {"exec_inherit", "exec-listener-after", g_self_port, NULL};
    execve("/proc/self/exe", args, environ);
  }
  fail("exec");
}

static void sc_exec_listener(void) { exec_listener(0); }

static void sc_exec_listener_execl(void) { exec_listener(1); }

static void sc_exec_listener_after(void) {
  const char *var = getenv(INHERIT_VAR);
  int l, c1, c2;
  if (!var || sscanf(var, "%d;%d;%d;", &l, &c1, &c2) != 3) fail("no %s", INHERIT_VAR);
  say("new image: listener and c1 named in the environment");
  say_socket("inherited listener", l);
  say_socket("inherited c1", c1);
  say_rc("fcntl F_GETFD of c2's number (closed by exec)", fcntl(c2, F_GETFD));
  say_write("c1 write", c1, "after exec");
  say_read("c1 read", c1, 3);
  int c3;
  do c3 = accept(l, NULL, NULL);
  while (c3 < 0 && errno == EINTR);
  if (c3 < 0) {
    say("accept on the inherited listener: -1 %s", ename(errno));
  } else {
    say("accept on the inherited listener: ok");
    say_read("c3 read", c3, 4);
    say_write("c3 write", c3, "served");
    close(c3);
  }
  close(c1);
  close(l);
}

static void sc_scm_rights_fork(void) {
  int sp[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) < 0) fail("socketpair");
  int l = listen_on(g_port);
  pid_t pid = fork();
  if (pid < 0) fail("fork");
  if (pid == 0) {
    close(sp[0]);
    close(l);
    int c = recv_fd(sp[1], "of c1 in the child");
    if (c >= 0) {
      say_socket("child's c1", c);
      say_read("child c1 read", c, 4);
      say_write("child c1 write", c, "pong");
      close(c);
    }
    int l2 = recv_fd(sp[1], "of the second listener in the child");
    if (l2 >= 0) {
      say_socket("child's listener", l2);
      int c2;
      do c2 = accept(l2, NULL, NULL);
      while (c2 < 0 && errno == EINTR);
      if (c2 < 0) {
        say("child accept: -1 %s", ename(errno));
      } else {
        say("child accept: ok");
        say_read("child c2 read", c2, 4);
        say_write("child c2 write", c2, "ok2");
        close(c2);
      }
      close(l2);
    }
    fflush(stdout);
    _exit(0);
  }
  close(sp[1]);
  int c1 = accept_one(l);
  /* From here the child prints; the parent prints again once the child is gone. */
  const char *sent1 = send_fd(sp[0], c1, "c1");
  close(c1);
  int l2 = make_listener(g_port + 1);
  const char *sent2 = send_fd(sp[0], l2, "the second listener");
  close(l2);
  int status;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  say("%s", sent1);
  say("%s", sent2);
  say("child exit: %d", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  close(sp[0]);
  close(l);
}

static void sc_upgrade_listener(void) {
  int l = listen_on(g_port);
  int c1 = accept_one(l);
  say_read("old master c1 read", c1, 4);
  say_write("old master c1 write", c1, "pong");
  close(c1);
  char var[32];
  snprintf(var, sizeof var, "%d;", l);
  if (setenv(INHERIT_VAR, var, 1) < 0) fail("setenv");
  pid_t pid = fork();
  if (pid < 0) fail("fork");
  if (pid == 0) {
    /* nginx gives the new binary no environment of its own but TZ, the variables named by
     * `env` directives and NGINX (ngx_set_environment): LD_PRELOAD and PNO_* are not in it. */
    char inherit[64];
    snprintf(inherit, sizeof inherit, "%s=%s", INHERIT_VAR, var);
    char *env[] = {"TZ=UTC", inherit, NULL};
    char *args[] = {"exec_inherit", "upgrade-listener-new", g_self_port, NULL};
    execve("/proc/self/exe", args, env);
    fail("execve");
  }
  /* The new binary prints from here; the old master again once it is gone. */
  int status;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  say("new binary exit: %d", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  close(l);
}

static void sc_upgrade_listener_new(void) {
  const char *var = getenv(INHERIT_VAR);
  int l;
  if (!var || sscanf(var, "%d;", &l) != 1) fail("no %s", INHERIT_VAR);
  say_socket("new binary's inherited listener", l);
  int c2;
  do c2 = accept(l, NULL, NULL);
  while (c2 < 0 && errno == EINTR);
  if (c2 < 0) {
    say("new binary accept: -1 %s", ename(errno));
    return;
  }
  say("new binary accept: ok");
  say_read("new binary c2 read", c2, 4);
  say_write("new binary c2 write", c2, "ok2");
  close(c2);
  close(l);
  /* oracle_main prints `done` for this image; the old master prints its own after. */
  say("new binary: done");
  fflush(stdout);
  _exit(0);
}

#define HANDOVER_VAR "PNO_TEST_HANDOVER"

static void sc_reload_handover(void) {
  int sp[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) < 0) fail("socketpair");
  int l = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  if (l < 0 || setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
      setsockopt(l, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) {
    fail("listener options");
  }
  struct sockaddr_in sa = sin_of("0.0.0.0", g_port);
  if (bind(l, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(l, 16) < 0) fail("listen");
  say("listen: ok");
  pid_t worker = fork();
  if (worker < 0) fail("fork");
  if (worker == 0) {
    /* The old worker: serves c1, hands the listener over on request, then stops. */
    close(sp[0]);
    int c1 = accept_one(l);
    say_read("worker c1 read", c1, 4);
    say_write("worker c1 write", c1, "pong");
    close(c1);
    send_token(sp[1], 'S');
    expect_token(sp[1], 'L');
    const char *sent = send_fd(sp[1], l, "the listener");
    (void)sent;
    expect_token(sp[1], 'Q');
    close(l);
    _exit(0);
  }
  close(sp[1]);
  close(l); /* the master keeps no listener of its own */
  expect_token(sp[0], 'S');
  char var[64];
  snprintf(var, sizeof var, "%d;%d;", sp[0], (int)worker);
  if (setenv(HANDOVER_VAR, var, 1) < 0) fail("setenv");
  say("master re-executes itself");
  char *args[] = {"exec_inherit", "reload-handover-after", g_self_port, NULL};
  execve("/proc/self/exe", args, environ);
  fail("execve");
}

static void sc_reload_handover_after(void) {
  int ctl, worker;
  const char *var = getenv(HANDOVER_VAR);
  if (!var || sscanf(var, "%d;%d;", &ctl, &worker) != 2) fail("no %s", HANDOVER_VAR);
  send_token(ctl, 'L');
  int l = recv_fd(ctl, "of the old worker's listener in the new image");
  if (l < 0) return;
  say_socket("handed-over listener", l);
  /* The old worker closes its copy and exits; c2 waits in the queue meanwhile. */
  send_token(ctl, 'Q');
  int status;
  while (waitpid((pid_t)worker, &status, 0) < 0 && errno == EINTR) {
  }
  say("old worker exit: %d", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  int c2;
  do c2 = accept(l, NULL, NULL);
  while (c2 < 0 && errno == EINTR);
  if (c2 < 0) {
    say("accept on the handed-over listener: -1 %s", ename(errno));
  } else {
    say("accept on the handed-over listener: ok");
    say_read("c2 read", c2, 4);
    say_write("c2 write", c2, "ok2");
    close(c2);
  }
  close(l);
  close(ctl);
}

static void sc_holder_dies(void) {
  int l = listen_on(g_port);
  int c1 = accept_one(l);
  pid_t pid = fork();
  if (pid < 0) fail("fork");
  if (pid == 0) {
    /* The child answers, then dies holding c1 and the listener. */
    char buf[4];
    read_exact(c1, buf, 4);
    write_all(c1, "pong", 4);
    raise(SIGKILL);
    _exit(1);
  }
  int status;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  say("child killed: %s", WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL ? "yes" : "no");
  say_write("c1 write after the child died", c1, "still here");
  int c2;
  do c2 = accept(l, NULL, NULL);
  while (c2 < 0 && errno == EINTR);
  if (c2 < 0) {
    say("accept after the child died: -1 %s", ename(errno));
  } else {
    say("accept after the child died: ok");
    say_read("c2 read", c2, 4);
    say_write("c2 write", c2, "fine");
    close(c2);
  }
  close(c1);
  close(l);
}

static struct sockaddr_un unix_addr(void) {
  struct sockaddr_un a;
  memset(&a, 0, sizeof a);
  a.sun_family = AF_UNIX;
  snprintf(a.sun_path, sizeof a.sun_path, "%s", g_addr);
  return a;
}

static void sc_scm_recv(void) {
  struct sockaddr_un a = unix_addr();
  int u = socket(AF_UNIX, SOCK_STREAM, 0);
  unlink(a.sun_path);
  if (u < 0 || bind(u, (struct sockaddr *)&a, sizeof a) < 0 || listen(u, 1) < 0) fail("unix");
  say("unix: listening");
  int s = accept(u, NULL, NULL);
  if (s < 0) fail("unix accept");
  int c = recv_fd(s, "of another application's connection");
  if (c >= 0) {
    say_socket("received connection", c);
    say_read("received connection read", c, 4);
    say_write("received connection write", c, "pong");
    close(c);
  }
  send_token(s, 'k');
  close(s);
  close(u);
  unlink(a.sun_path);
}

static void sc_scm_send(void) {
  int l = listen_on(g_port);
  int c1 = accept_one(l);
  struct sockaddr_un a = unix_addr();
  int u = socket(AF_UNIX, SOCK_STREAM, 0);
  if (u < 0 || connect(u, (struct sockaddr *)&a, sizeof a) < 0) fail("unix connect %s", g_addr);
  const char *sent = send_fd(u, c1, "c1 to another application");
  say("%s", sent);
  /* Refused: a plain byte instead, so that the receiver's recvmsg returns (without a fd). */
  if (strstr(sent, ": -1 ")) send_token(u, 'F');
  close(c1);
  /* The receiver says when it is through, so that both outputs are complete. */
  char k;
  ssize_t n = read(u, &k, 1);
  say("receiver finished: %s", n == 1 && k == 'k' ? "yes" : "no");
  close(u);
  close(l);
}

int main(int argc, char **argv) {
  if (argc > 2) snprintf(g_self_port, sizeof g_self_port, "%s", argv[2]);
  static const struct scenario table[] = {
      {"exec-listener", sc_exec_listener},
      {"exec-listener-execl", sc_exec_listener_execl},
      {"exec-listener-after", sc_exec_listener_after},
      {"scm-rights-fork", sc_scm_rights_fork},
      {"holder-dies", sc_holder_dies},
      {"upgrade-listener", sc_upgrade_listener},
      {"upgrade-listener-new", sc_upgrade_listener_new},
      {"reload-handover", sc_reload_handover},
      {"reload-handover-after", sc_reload_handover_after},
      {"scm-send", sc_scm_send},
      {"scm-recv", sc_scm_recv},
  };
  return oracle_main(argc, argv, table, sizeof table / sizeof table[0]);
}

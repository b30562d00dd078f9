/*
 * The client side of exec_inherit.c, run in the client namespace with kernel TCP.
 * Usage: exec_peer SCENARIO ADDRESS PORT. Every step prints one line; the end prints `done`.
 */
#include "common.h"


/* Connects to the server's port + offset, retrying while nothing listens there yet. */
static int dial(int offset) {
  struct sockaddr_in sa = sin_of(g_addr, g_port + offset);
  for (int attempt = 0;; attempt++) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) fail("socket");
    if (connect(s, (struct sockaddr *)&sa, sizeof sa) == 0) return s;
    int e = errno;
    close(s);
    if (e != ECONNREFUSED || attempt == 200) {
      errno = e;
      fail("connect port + %d", offset);
    }
    msleep(10);
  }
}


static void say_eof(const char *what, int fd) {
  char b;
  ssize_t k;
  do k = read(fd, &b, 1);
  while (k < 0 && errno == EINTR);
  if (k == 0) say("%s: EOF", what);
  else if (k < 0) say("%s: -1 %s", what, ename(errno));
  else say("%s: a byte, not EOF", what);
}

static void sc_exec_listener(void) {
  int c1 = dial(0);
  write_all(c1, "hello", 5);
  int c2 = dial(0);
  say_eof("c2 (closed by the exec)", c2);
  say_read("c1 read", c1, 10);
  write_all(c1, "ack", 3);
  int c3 = dial(0);
  write_all(c3, "new!", 4);
  say_read("c3 read", c3, 6);
  say_eof("c3 after the answer", c3);
  say_eof("c1 at the end", c1);
  close(c1);
  close(c2);
  close(c3);
}

static void sc_scm_rights_fork(void) {
  int c1 = dial(0);
  write_all(c1, "ping", 4);
  say_read("c1 read", c1, 4);
  say_eof("c1 after the answer", c1);
  int c2 = dial(1);
  write_all(c2, "two!", 4);
  say_read("c2 read", c2, 3);
  say_eof("c2 after the answer", c2);
  close(c1);
  close(c2);
}

static void sc_holder_dies(void) {
  int c1 = dial(0);
  write_all(c1, "ping", 4);
  say_read("c1 read", c1, 4);
  say_read("c1 read after the child died", c1, 10);
  int c2 = dial(0);
  write_all(c2, "new!", 4);
  say_read("c2 read", c2, 4);
  say_eof("c2 after the answer", c2);
  say_eof("c1 at the end", c1);
  close(c1);
  close(c2);
}

static void sc_reload_handover(void) {
  int c1 = dial(0);
  write_all(c1, "ping", 4);
  say_read("c1 read", c1, 4);
  say_eof("c1 after the answer", c1);
  /* Queued while the listener changes hands (nobody accepts it until the new image does). */
  int c2 = dial(0);
  write_all(c2, "two!", 4);
  say_read("c2 read", c2, 3);
  say_eof("c2 after the answer", c2);
  close(c1);
  close(c2);
}

static void sc_scm_other(void) {
  int c1 = dial(0);
  write_all(c1, "ping", 4);
  say_read("c1 read", c1, 4);
  say_eof("c1 after the answer", c1);
  close(c1);
}

int main(int argc, char **argv) {
  static const struct scenario table[] = {
      {"exec-listener", sc_exec_listener},
      {"exec-listener-execl", sc_exec_listener},
      {"scm-rights-fork", sc_scm_rights_fork},
      {"holder-dies", sc_holder_dies},
      {"reload-handover", sc_reload_handover},
      {"upgrade-listener", sc_reload_handover},
      {"scm-send", sc_scm_other},
  };
  return peer_main(argc, argv, table, sizeof table / sizeof table[0]);
}

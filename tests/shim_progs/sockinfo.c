/*
 * What a socket says about itself: getsockname/getpeername both ways (the peer's source port
 * is fixed, PORT+1, so every port printed comes from argv), socket options set and read back
 * (defaults, inheritance by accepted sockets, bad values), and SO_LINGER {1, 0} (RST on close).
 * Usage: sockinfo SCENARIO PORT [PEER-ADDRESS].
 */
#include "common.h"

static void read_line(const char *what, int fd) {
  char buf[64];
  ssize_t n = read(fd, buf, sizeof buf);
  say_io(what, n, buf);
}

/* `what: AF_INET port=N len=16` (+ ` addr=any` / ` addr=argv` when it is one of those). */
static void say_name(const char *what, int rc, const struct sockaddr_in *sa, socklen_t len) {
  if (rc < 0) {
    say("%s: -1 %s", what, ename(errno));
    return;
  }
  const char *fam = sa->sin_family == AF_INET ? "AF_INET" : "other";
  char addr[INET_ADDRSTRLEN] = "";
  inet_ntop(AF_INET, &sa->sin_addr, addr, sizeof addr);
  const char *which = sa->sin_addr.s_addr == htonl(INADDR_ANY) ? " addr=any"
                      : strcmp(addr, g_addr) == 0              ? " addr=argv"
                                                               : "";
  say("%s: %s port=%d len=%u%s", what, fam, ntohs(sa->sin_port), (unsigned)len, which);
}

static void names_of(int fd, const char *sock, const char *peer) {
  struct sockaddr_in sa;
  socklen_t len = sizeof sa;
  memset(&sa, 0, sizeof sa);
  say_name(sock, getsockname(fd, (struct sockaddr *)&sa, &len), &sa, len);
  if (!peer) return;
  len = sizeof sa;
  memset(&sa, 0, sizeof sa);
  say_name(peer, getpeername(fd, (struct sockaddr *)&sa, &len), &sa, len);
}

static void sc_names(void) {
  int l = listen_on(g_port);
  names_of(l, "listener getsockname", "listener getpeername");
  struct sockaddr_in from;
  socklen_t len = sizeof from;
  memset(&from, 0, sizeof from);
  int c = accept(l, (struct sockaddr *)&from, &len);
  if (c < 0) fail("accept");
  say("accept: ok");
  checkpoint();
  say_name("accept address", 0, &from, len);
  names_of(c, "getsockname", "getpeername");
  /* A short buffer: truncated, and the length says how much there was. */
  struct sockaddr_in sa;
  socklen_t short_len = 4;
  int rc = getsockname(c, (struct sockaddr *)&sa, &short_len);
  say("getsockname short: %d len=%u", rc, (unsigned)short_len);
  send_token(c, 'g');
  read_line("read", c); /* the peer closes first (its TIME_WAIT stays in its namespace) */
  close(c);
  close(l);
}

static void sc_names_out(void) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  if (s < 0) fail("socket");
  names_of(s, "unbound getsockname", "unbound getpeername");
  int one = 1;
  if (setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0) fail("SO_REUSEADDR");
  struct sockaddr_in me = sin_of("0.0.0.0", g_port + 1);
  say_rc("bind", bind(s, (struct sockaddr *)&me, sizeof me));
  names_of(s, "bound getsockname", NULL);
  struct sockaddr_in to = sin_of(g_addr, g_port);
  say_rc("connect", connect(s, (struct sockaddr *)&to, sizeof to));
  checkpoint();
  names_of(s, "getsockname", "getpeername");
  send_token(s, 'g');
  read_line("read", s); /* the peer closes first */
  close(s);
}

static void say_int_opt(const char *what, int fd, int level, int name) {
  int v = -1;
  socklen_t len = sizeof v;
  if (getsockopt(fd, level, name, &v, &len) < 0) say("%s: -1 %s", what, ename(errno));
  else say("%s: %d len=%u", what, v, (unsigned)len);
}

static void set_int_opt(const char *what, int fd, int level, int name, int v) {
  char label[96];
  snprintf(label, sizeof label, "setsockopt %s=%d", what, v);
  say_rc(label, setsockopt(fd, level, name, &v, sizeof v));
}

static void say_linger(const char *what, int fd) {
  struct linger lg = {-1, -1};
  socklen_t len = sizeof lg;
  if (getsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, &len) < 0) say("%s: -1 %s", what, ename(errno));
  else say("%s: onoff=%d linger=%d len=%u", what, lg.l_onoff, lg.l_linger, (unsigned)len);
}

static void say_all(const char *who, int fd) {
  char label[96];
#define OPT(level, name)                                 \
  do {                                                   \
    snprintf(label, sizeof label, "%s " #name, who);     \
    say_int_opt(label, fd, level, name);                 \
  } while (0)
  OPT(IPPROTO_TCP, TCP_NODELAY);
  OPT(SOL_SOCKET, SO_KEEPALIVE);
  OPT(IPPROTO_TCP, TCP_KEEPIDLE);
  OPT(IPPROTO_TCP, TCP_KEEPINTVL);
  OPT(IPPROTO_TCP, TCP_KEEPCNT);
  OPT(SOL_SOCKET, SO_REUSEADDR);
  OPT(SOL_SOCKET, SO_TYPE);
  OPT(SOL_SOCKET, SO_ACCEPTCONN);
#undef OPT
  snprintf(label, sizeof label, "%s SO_LINGER", who);
  say_linger(label, fd);
}

static void sc_sockopts(void) {
  int fresh = socket(AF_INET, SOCK_STREAM, 0);
  if (fresh < 0) fail("socket");
  say_all("fresh", fresh);
  close(fresh);

  /* Options set on the listener before listen(): which ones the accepted socket inherits. */
  int l = socket(AF_INET, SOCK_STREAM, 0);
  if (l < 0) fail("socket");
  set_int_opt("SO_REUSEADDR", l, SOL_SOCKET, SO_REUSEADDR, 1);
  set_int_opt("TCP_NODELAY", l, IPPROTO_TCP, TCP_NODELAY, 1);
  set_int_opt("SO_KEEPALIVE", l, SOL_SOCKET, SO_KEEPALIVE, 1);
  set_int_opt("TCP_KEEPIDLE", l, IPPROTO_TCP, TCP_KEEPIDLE, 60);
  struct sockaddr_in sa = sin_of("0.0.0.0", g_port);
  if (bind(l, (struct sockaddr *)&sa, sizeof sa) < 0) fail("bind");
  if (listen(l, 16) < 0) fail("listen");
  say("listen: ok");
  int c = accept_one(l);
  say_all("listener", l);
  say_all("accepted", c);

  set_int_opt("TCP_NODELAY", c, IPPROTO_TCP, TCP_NODELAY, 0);
  set_int_opt("SO_KEEPALIVE", c, SOL_SOCKET, SO_KEEPALIVE, 0);
  set_int_opt("TCP_KEEPIDLE", c, IPPROTO_TCP, TCP_KEEPIDLE, 30);
  set_int_opt("TCP_KEEPINTVL", c, IPPROTO_TCP, TCP_KEEPINTVL, 5);
  set_int_opt("TCP_KEEPCNT", c, IPPROTO_TCP, TCP_KEEPCNT, 3);
  set_int_opt("SO_REUSEADDR", c, SOL_SOCKET, SO_REUSEADDR, 0);
  set_int_opt("TCP_KEEPIDLE", c, IPPROTO_TCP, TCP_KEEPIDLE, 0); /* out of range */
  set_int_opt("TCP_NODELAY", c, IPPROTO_TCP, TCP_NODELAY, 7);   /* any non-zero is on */
  struct linger lg = {1, 5};
  say_rc("setsockopt SO_LINGER={1,5}", setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg));
  say_rc("setsockopt SO_LINGER short", setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, 4));
  say_all("set", c);

  send_token(c, 'g');
  read_line("read", c);
  say_rc("close", close(c)); /* lingers until the FIN is acknowledged: at once here */
  close(l);
}

static void sc_linger_zero(void) {
  int l = listen_on(g_port), c = accept_one(l);
  struct linger lg = {1, 0};
  say_rc("setsockopt SO_LINGER={1,0}", setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg));
  read_line("read", c);
  say_rc("close", close(c)); /* an abortive close: RST */
  close(l);
}

int main(int argc, char **argv) {
  static const struct scenario table[] = {
      {"names", sc_names},
      {"names-out", sc_names_out},
      {"sockopts", sc_sockopts},
      {"linger-zero", sc_linger_zero},
  };
  return oracle_main(argc, argv, table, sizeof table / sizeof table[0]);
}

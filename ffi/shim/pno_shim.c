/*
 * libpno_shim.so: the LD_PRELOAD interposer that gives an unmodified program's TCP sockets to
 * the PnO bridge. Reads top to bottom:
 *
 *   1. the real libc entry points (dlsym RTLD_NEXT), resolved before anything else runs;
 *   2. process state: the region (attached lazily, at the first socket the policy offloads),
 *      the fd table, the per-thread command ring and waiter;
 *   3. commands and completions, doorbells and the bridge's wakeup;
 *   4. readiness (Linux's tcp_poll over the socket line and the ring indices) and blocking;
 *   5. the socket calls, epoll, poll and select, fork, and the _FORTIFY_SOURCE variants.
 *
 * The model (../../../shared/DESIGN.md, "The shim"): socket() makes a real kernel socket, the
 * placeholder whose fd number the application sees; the decision to offload comes at bind,
 * listen or connect; from then on the socket lives in the region and the placeholder only
 * holds the number (and the file flags: O_NONBLOCK, FD_CLOEXEC). Everything that is not an
 * offloaded TCP socket goes to libc untouched.
 *
 * The region is shared with the bridge and with the application's other processes; the only
 * fields this side trusts are the ones it writes itself. Calls on one socket from several
 * threads or processes are serialised by the lock word in the socket's host line.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "pno_rings.h"

#define EXPORT __attribute__((visibility("default")))
#define MAX_FDS 65536
/* Internal fds are moved up here, out of the way of the application's numbering. */
#define INTERNAL_FD_BASE 900
/* data.u64 of the waiter's wake socket in a kernel epoll set: never handed to the app. */
#define WAKE_MAGIC 0x706e6f77616b6521ULL
/* Completions come within microseconds from a busy bridge; a dead one is given this long. */
#define COMPLETION_TIMEOUT_NS (10ULL * 1000 * 1000 * 1000)

/* ---- 1. The real libc ------------------------------------------------------------------- */

static struct {
	int (*socket)(int, int, int);
	int (*bind)(int, const struct sockaddr *, socklen_t);
	int (*listen)(int, int);
	int (*accept4)(int, struct sockaddr *, socklen_t *, int);
	int (*connect)(int, const struct sockaddr *, socklen_t);
	ssize_t (*read)(int, void *, size_t);
	ssize_t (*write)(int, const void *, size_t);
	ssize_t (*readv)(int, const struct iovec *, int);
	ssize_t (*writev)(int, const struct iovec *, int);
	ssize_t (*recvfrom)(int, void *, size_t, int, struct sockaddr *, socklen_t *);
	ssize_t (*sendto)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
	ssize_t (*recvmsg)(int, struct msghdr *, int);
	ssize_t (*sendmsg)(int, const struct msghdr *, int);
	ssize_t (*sendfile)(int, int, off_t *, size_t);
	int (*close)(int);
	int (*shutdown)(int, int);
	int (*getsockopt)(int, int, int, void *, socklen_t *);
	int (*setsockopt)(int, int, int, const void *, socklen_t);
	int (*getsockname)(int, struct sockaddr *, socklen_t *);
	int (*getpeername)(int, struct sockaddr *, socklen_t *);
	int (*fcntl)(int, int, ...);
	int (*ioctl)(int, unsigned long, ...);
	int (*dup)(int);
	int (*dup2)(int, int);
	int (*dup3)(int, int, int);
	int (*epoll_create)(int);
	int (*epoll_create1)(int);
	int (*epoll_ctl)(int, int, int, struct epoll_event *);
	int (*epoll_pwait)(int, struct epoll_event *, int, int, const sigset_t *);
	int (*poll)(struct pollfd *, nfds_t, int);
	int (*ppoll)(struct pollfd *, nfds_t, const struct timespec *, const sigset_t *);
	pid_t (*fork)(void);
	ssize_t (*splice)(int, loff_t *, int, loff_t *, size_t, unsigned int);
	int (*execve)(const char *, char *const[], char *const[]);
	int (*execv)(const char *, char *const[]);
	int (*execvp)(const char *, char *const[]);
	int (*execvpe)(const char *, char *const[], char *const[]);
	int (*fexecve)(int, char *const[], char *const[]);
	long (*syscall)(long, ...);
} real;

static void resolve_real(void)
{
#define R(name) real.name = dlsym(RTLD_NEXT, #name)
	R(socket); R(bind); R(listen); R(accept4); R(connect); R(read); R(write); R(readv);
	R(writev); R(recvfrom); R(sendto); R(recvmsg); R(sendmsg); R(sendfile); R(close);
	R(shutdown); R(getsockopt); R(setsockopt); R(getsockname); R(getpeername); R(fcntl);
	R(ioctl); R(dup); R(dup2); R(dup3); R(epoll_create); R(epoll_create1); R(epoll_ctl);
	R(epoll_pwait); R(poll); R(ppoll); R(fork); R(splice); R(syscall);
	R(execve); R(execv); R(execvp); R(execvpe); R(fexecve);
#undef R
}

static pthread_once_t real_once = PTHREAD_ONCE_INIT;
/* Every entry point starts here: a constructor of another library may call us first. */
#define REAL() pthread_once(&real_once, resolve_real)

/* ---- 2. Process state ------------------------------------------------------------------- */

enum { P_PENDING = 1, P_OFFLOADED = 2 };

/* An AF_INET stream socket of this process: pending (not yet decided) or offloaded. */
struct psock {
	int kind;
	uint32_t slot, gen;
	int fdrefs; /* fds of this process that refer to it */
	int nonblock;
	/* options set before the decision, forwarded when it is offloaded */
	int reuseaddr, reuseport, nodelay, keepalive, keepidle, keepintvl, keepcnt, cork;
	int linger; /* -1 off, else seconds */
	int rcvtimeo_ms, sndtimeo_ms;
	int listening;
	int inherited; /* accepted: options came from the listener */
	int bound_any; /* bound to INADDR_ANY */
	int loop_listening; /* its placeholder listens on 127.0.0.1, same port */
	/* the last thread waiter subscribed to it, for blocking calls */
	int tw_waiter;
	uint32_t tw_gen;
	/* epoll sets it is in, for the subscription when it is offloaded */
	struct epi *epis;
};

/* An item of an epoll set whose fd is one of our sockets. */
struct epi {
	int fd;
	struct psock *p;
	uint32_t events;
	epoll_data_t data;
	int disabled; /* EPOLLONESHOT fired */
	int in_ready;
	/* EPOLLET: what the socket looked like when last reported; a notification that finds
	 * it unchanged is not a new edge (the NIC may notify twice for one change). */
	uint64_t et_seen;
	struct epi *ready_next, *ready_prev;
	struct epi *slot_next; /* same slot in this set */
	struct epi *sock_next; /* same socket, other sets */
	struct pep *ep;
};

/* An epoll instance: a real kernel epoll for kernel fds plus our items and waiter. */
struct pep {
	int kfd;
	int waiter; /* -1 until an offloaded item is added */
	uint32_t wgen;
	pid_t owner;
	int wake_rd, wake_wr;
	struct pno_dring ev;
	struct epi **byfd;
	struct epi **byslot;
	struct epi ready; /* list head */
	int nested; /* it is itself in another epoll set or poll: keep the waiter awake-able */
	int kernel_first; /* alternates: the kernel's ready fds and ours take turns at the head */
	int inner[8];     /* epoll sets of ours inside this one, refreshed before each wait */
	int n_inner;
	pthread_mutex_t mu;
};

/* A thread's command ring and its waiter for blocking calls. */
struct thr {
	int entry;
	struct pno_dring cmd, cpl;
	uint32_t next_req;
	int waiter;
	uint32_t wgen;
	int wake_rd;
	struct pno_dring ev;
	pid_t pid;
};

static struct {
	/* fd table, attach, sockets' epoll lists; on the data path only where poll() or select()
	 * finds ready a socket that is also in an epoll set (note_ready) */
	pthread_mutex_t mu;
	pthread_mutex_t ctl_mu; /* frames on the control socket */
	int attached;          /* 1 attached, -1 failed, 0 not tried */
	uint8_t *base;
	uint64_t size;
	const struct pno_region_header *hdr;
	uint32_t local_ip;     /* the bridge's address, host order */
	int ctl_fd, bridge_efd;
	int region_fd;         /* the region's memfd, kept for exec (see "exec") */
	uint32_t region_id;    /* the bridge's (or proxy's) id of the region, for HELLO_JOIN */
	pid_t ctl_pid;         /* the process whose own connection ctl_fd is */
	char ctl_path[108];
	int bridge_dead;       /* the control socket hung up: every offloaded socket is reset */
	int proc;              /* our process entry */
	int required, debug, disabled;
	uint64_t spin_ns;      /* PNO_SPIN_US: how long a waiter looks before it sleeps */
	struct psock *files[MAX_FDS];
	struct pep *eps[MAX_FDS];
	uint8_t internal[MAX_FDS];
	pthread_key_t thr_key;
} g = { .mu = PTHREAD_MUTEX_INITIALIZER, .ctl_mu = PTHREAD_MUTEX_INITIALIZER, .ctl_fd = -1, .bridge_efd = -1, .region_fd = -1, .proc = -1 };

static __thread struct thr *self;

/* mypid() is a system call in glibc: the pid is kept here, and set anew in a forked child. */
static pid_t my_pid;

static pid_t mypid(void)
{
	pid_t p = __atomic_load_n(&my_pid, __ATOMIC_RELAXED);
	if (p == 0) {
		p = getpid();
		__atomic_store_n(&my_pid, p, __ATOMIC_RELAXED);
	}
	return p;
}

static void warnx_once(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n > 0)
		real.write(2, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

static struct psock *ours(int fd)
{
	if (fd < 0 || fd >= MAX_FDS)
		return NULL;
	return __atomic_load_n(&g.files[fd], __ATOMIC_ACQUIRE);
}

static struct psock *offloaded(int fd)
{
	struct psock *p = ours(fd);
	return p && p->kind == P_OFFLOADED ? p : NULL;
}

static struct pep *epoll_of(int fd)
{
	if (fd < 0 || fd >= MAX_FDS)
		return NULL;
	return __atomic_load_n(&g.eps[fd], __ATOMIC_ACQUIRE);
}

/* Moves an internal fd above the application's usual range and marks it close-on-exec. */
static int hide_fd(int fd)
{
	if (fd < 0)
		return fd;
	int hi = real.fcntl(fd, F_DUPFD_CLOEXEC, INTERNAL_FD_BASE);
	if (hi >= 0) {
		real.close(fd);
		fd = hi;
	} else {
		real.fcntl(fd, F_SETFD, FD_CLOEXEC);
	}
	if (fd < MAX_FDS)
		g.internal[fd] = 1;
	return fd;
}

static struct pno_sock *line(uint32_t slot)
{
	return pno_region_sock(g.base, slot);
}

static uint16_t *proc_refs(void)
{
	return pno_region_proc_refs(g.base, (uint32_t)g.proc);
}

/* ---- Attach: HELLO over the control socket, the region and the bridge's eventfd -------- */

static int send_frame(int fd, uint8_t type, const void *payload, uint32_t len, int pass_fd)
{
	uint8_t buf[64];
	uint32_t total = 1 + len;
	memcpy(buf, &total, 4);
	buf[4] = type;
	memcpy(buf + 5, payload, len);
	struct iovec iov = { buf, 5 + len };
	union {
		struct cmsghdr h;
		char space[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	if (pass_fd >= 0) {
		memset(&ctl, 0, sizeof(ctl));
		msg.msg_control = ctl.space;
		msg.msg_controllen = sizeof(ctl.space);
		struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
	}
	return real.sendmsg(fd, &msg, MSG_NOSIGNAL) == (ssize_t)(5 + len) ? 0 : -1;
}

/* Receives one frame (at most cap payload bytes) and the fd passed with it, if any. */
static int recv_frame(int fd, uint8_t *type, uint8_t *payload, uint32_t cap, int *got_fd)
{
	uint8_t head[5];
	*got_fd = -1;
	union {
		struct cmsghdr h;
		char space[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct iovec iov = { head, 5 };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.space,
			      .msg_controllen = sizeof(ctl.space) };
	if (real.recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_WAITALL) != 5)
		return -1;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
			memcpy(got_fd, CMSG_DATA(c), sizeof(int));
	uint32_t len;
	memcpy(&len, head, 4);
	*type = head[4];
	if (len < 1 || len - 1 > cap)
		return -1;
	if (len > 1) {
		size_t got = 0;
		while (got < len - 1) {
			ssize_t n = real.read(fd, payload + got, len - 1 - got);
			if (n <= 0)
				return -1;
			got += (size_t)n;
		}
	}
	return (int)(len - 1);
}

static int claim_proc(pid_t parent)
{
	uint32_t n = g.hdr->max_procs;
	for (uint32_t i = 0; i < n; i++) {
		struct pno_proc_line *pl = pno_region_proc(g.base, i);
		uint32_t zero = 0;
		if (__atomic_compare_exchange_n(&pl->pid, &zero, (uint32_t)mypid(), 0,
						__ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
			pl->parent = (uint32_t)parent;
			memset(pno_region_proc_refs(g.base, i), 0, 2 * (size_t)g.hdr->max_sockets);
			return (int)i;
		}
	}
	return -1;
}

static const char *attach_error;

static int do_attach(void)
{
	const char *path = getenv("PNO_CONTROL");
	if (!path || !*path)
		path = "/run/pno/bridge.sock";
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof(sa.sun_path)) {
		attach_error = "control socket path too long";
		return -1;
	}
	strcpy(sa.sun_path, path);
	int fd = real.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || real.connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		attach_error = strerror(errno);
		if (fd >= 0)
			real.close(fd);
		return -1;
	}
	fd = hide_fd(fd);
	uint32_t hello[3] = { PNO_LAYOUT_VERSION, 0, 0 };
	uint8_t type, payload[256];
	int rfd = -1, efd = -1;
	if (send_frame(fd, 1 /* HELLO */, hello, sizeof(hello), -1) != 0)
		goto broken;
	int n = recv_frame(fd, &type, payload, sizeof(payload) - 1, &rfd);
	if (n < 0)
		goto broken;
	if (type == 3 /* ERROR */) {
		payload[n] = 0;
		static char why[300];
		snprintf(why, sizeof(why), "refused: %s", (char *)payload);
		attach_error = why;
		real.close(fd);
		return -1;
	}
	if (type != 2 /* REGION */ || n < 16 || rfd < 0)
		goto broken;
	uint64_t size;
	memcpy(&size, payload + 8, 8);
	memcpy(&g.region_id, payload + 4, 4);
	void *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, rfd, 0);
	if (base == MAP_FAILED) {
		real.close(rfd);
		goto broken;
	}
	/* Kept (hidden, close-on-exec) so that an exec that inherits sockets can pass it on. */
	rfd = hide_fd(rfd);
	if (pno_region_check(base, size) != 0) {
		munmap(base, size);
		g.internal[rfd] = 0;
		real.close(rfd);
		attach_error = "region header rejected (layout version mismatch?)";
		real.close(fd);
		return -1;
	}
	if (recv_frame(fd, &type, payload, sizeof(payload), &efd) < 0 || type != 4 || efd < 0)
		goto broken;
	g.base = base;
	g.size = size;
	g.region_fd = rfd;
	g.hdr = base;
	g.local_ip = g.hdr->local_ip;
	g.ctl_fd = fd;
	g.ctl_pid = mypid();
	snprintf(g.ctl_path, sizeof(g.ctl_path), "%s", path);
	g.bridge_efd = hide_fd(efd);
	g.proc = claim_proc(0);
	if (g.proc < 0) {
		attach_error = "the region's process table is full";
		return -1;
	}
	return 0;
broken:
	attach_error = "broken reply on the control socket";
	real.close(fd);
	return -1;
}

/* A policy line "offload NET/LEN" or "kernel NET/LEN": where connect() goes. */
struct net_rule {
	uint32_t net, mask;
	int offload;
};

static struct {
	struct net_rule nets[32];
	int n_nets, n_offload;
	int listen_mode; /* 0 any (INADDR_ANY and the bridge's address), 1 bridge only, 2 none */
	int loopback;    /* INADDR_ANY listeners also answer on 127.0.0.1 through the placeholder */
	uint16_t kernel_ports[32];
	int n_ports;
} pol = { .loopback = 1 };

static int parse_cidr(const char *text, struct net_rule *r)
{
	unsigned a, b, c, d, len = 32;
	int n = sscanf(text, "%u.%u.%u.%u/%u", &a, &b, &c, &d, &len);
	if (n < 4 || a > 255 || b > 255 || c > 255 || d > 255 || len > 32)
		return -1;
	r->mask = len == 0 ? 0 : 0xffffffffu << (32 - len);
	r->net = ((a << 24) | (b << 16) | (c << 8) | d) & r->mask;
	return 0;
}

/*
 * The offload policy: PNO_POLICY names a file of lines (see packages/shim/policy.ts for the
 * format, which the launcher checks before the program starts); a bad line is reported once
 * and ignored. Environment variables win over the file.
 */
static void parse_policy(void)
{
	const char *path = getenv("PNO_POLICY");
	FILE *f = path && *path ? fopen(path, "re") : NULL;
	if (path && *path && !f)
		warnx_once("pno: policy file %s: %s (default policy)\n", path, strerror(errno));
	char line[256];
	int lineno = 0;
	while (f && fgets(line, sizeof(line), f)) {
		lineno++;
		char *hash = strchr(line, '#');
		if (hash)
			*hash = 0;
		char key[32], val[128];
		int n = sscanf(line, "%31s %127s", key, val);
		if (n <= 0)
			continue;
		int ok = n == 2;
		if (ok && (!strcmp(key, "offload") || !strcmp(key, "kernel"))) {
			struct net_rule r;
			ok = pol.n_nets < 32 && parse_cidr(val, &r) == 0;
			if (ok) {
				r.offload = key[0] == 'o';
				pol.nets[pol.n_nets++] = r;
				pol.n_offload += r.offload;
			}
		} else if (ok && !strcmp(key, "listen")) {
			pol.listen_mode = !strcmp(val, "any") ? 0 : !strcmp(val, "bridge") ? 1
				       : !strcmp(val, "none") ? 2 : -1;
			ok = pol.listen_mode >= 0;
			if (!ok)
				pol.listen_mode = 0;
		} else if (ok && !strcmp(key, "loopback")) {
			pol.loopback = !strcmp(val, "on");
			ok = pol.loopback || !strcmp(val, "off");
		} else if (ok && !strcmp(key, "kernel-port")) {
			int port = atoi(val);
			ok = pol.n_ports < 32 && port > 0 && port < 65536;
			if (ok)
				pol.kernel_ports[pol.n_ports++] = (uint16_t)port;
		} else if (ok && !strcmp(key, "required")) {
			g.required = !strcmp(val, "yes");
			ok = g.required || !strcmp(val, "no");
		} else if (ok && !strcmp(key, "spin-us")) {
			g.spin_ns = (uint64_t)atoi(val) * 1000;
		} else {
			ok = 0;
		}
		if (!ok)
			warnx_once("pno: policy file %s line %d not understood: %s", path, lineno, line);
	}
	if (f)
		fclose(f);
	if (getenv("PNO_REQUIRED"))
		g.required = *getenv("PNO_REQUIRED") == '1';
	g.debug = getenv("PNO_DEBUG") != NULL;
	const char *spin = getenv("PNO_SPIN_US");
	if (spin)
		g.spin_ns = (uint64_t)atoi(spin) * 1000;
}

/* After attaching: with no "offload" line, connect() goes to PnO for the bridge's subnet. */
static void policy_defaults(void)
{
	if (pol.n_offload > 0 || pol.n_nets >= 32)
		return;
	const char *prefix = getenv("PNO_OFFLOAD_PREFIX");
	int len = prefix ? atoi(prefix) : 24;
	if (len < 0 || len > 32)
		len = 24;
	struct net_rule r = { .mask = len == 0 ? 0 : 0xffffffffu << (32 - len), .offload = 1 };
	r.net = g.local_ip & r.mask;
	pol.nets[pol.n_nets++] = r;
	pol.n_offload++;
}

static void pool_fill(void);

/* Attaches once; returns 1 if sockets can be offloaded. */
static int attach(void)
{
	int state = __atomic_load_n(&g.attached, __ATOMIC_ACQUIRE);
	if (state != 0)
		return state > 0;
	pthread_mutex_lock(&g.mu);
	int attached_now = 0;
	if (g.attached == 0) {
		parse_policy();
		int ok = do_attach() == 0;
		if (ok)
			policy_defaults();
		attached_now = ok;
		__atomic_store_n(&g.attached, ok ? 1 : -1, __ATOMIC_RELEASE);
		if (!ok) {
			warnx_once("pno: cannot attach to the bridge (%s): sockets stay in the kernel\n",
				   attach_error ? attach_error : "?");
			if (g.required) {
				warnx_once("pno: the policy requires the offload: exiting\n");
				_exit(111);
			}
		}
	}
	pthread_mutex_unlock(&g.mu);
	if (attached_now)
		pool_fill();
	return g.attached > 0;
}

/* ---- 3. Commands, completions, doorbells ------------------------------------------------ */

static pid_t gettid_(void)
{
	return (pid_t)real.syscall(SYS_gettid);
}

static void release_thread(void *arg);
struct pep;
static void nested_rearm(struct pep *ep);

/* This thread's command ring, claimed on first use (a dead owner's ring is taken over). */
static struct thr *thread_state(void)
{
	struct thr *t = self;
	if (t && t->pid == mypid())
		return t;
	if (!t) {
		t = calloc(1, sizeof(*t));
		if (!t)
			return NULL;
	}
	t->pid = mypid();
	t->waiter = -1;
	t->wake_rd = -1;
	uint32_t tid = (uint32_t)gettid_();
	for (uint32_t i = 0; i < g.hdr->max_threads; i++) {
		struct pno_thread_line *tl = pno_region_thread(g.base, i);
		uint32_t owner = __atomic_load_n(&tl->owner_tid, __ATOMIC_ACQUIRE);
		int free_ = owner == 0;
		if (!free_ && tl->owner_pid != 0 && kill((pid_t)tl->owner_pid, 0) != 0 &&
		    errno == ESRCH)
			free_ = 1; /* its process is gone */
		if (!free_)
			continue;
		if (!__atomic_compare_exchange_n(&tl->owner_tid, &owner, tid, 0, __ATOMIC_SEQ_CST,
						 __ATOMIC_SEQ_CST))
			continue;
		tl->owner_pid = (uint32_t)mypid();
		t->entry = (int)i;
		pno_region_cmd_producer(&t->cmd, g.base, i);
		pno_region_cpl_consumer(&t->cpl, g.base, i);
		self = t;
		pthread_setspecific(g.thr_key, t);
		return t;
	}
	free(t);
	self = NULL;
	return NULL;
}

/*
 * Whether the bridge is gone: it closed its end of the control socket (the proxy closes the
 * application's when the bridge goes). From then on every offloaded socket is reset, as Linux
 * resets connections whose route is gone for good, and nothing waits on the rings any more.
 */
static int bridge_gone(void)
{
	if (__atomic_load_n(&g.bridge_dead, __ATOMIC_ACQUIRE))
		return 1;
	if (g.ctl_fd < 0)
		return 0;
	struct pollfd pf = { .fd = g.ctl_fd, .events = POLLIN | POLLRDHUP };
	if (real.poll(&pf, 1, 0) != 1)
		return 0;
	if (!(pf.revents & (POLLHUP | POLLRDHUP | POLLERR))) {
		char c;
		/* Readable: a frame (an acknowledgement in flight) or the end of the stream. */
		if (real.recvfrom(g.ctl_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT, NULL, NULL) != 0)
			return 0;
	}
	__atomic_store_n(&g.bridge_dead, 1, __ATOMIC_RELEASE);
	warnx_once("pno: the bridge is gone: offloaded connections are reset\n");
	return 1;
}

static void kick_bridge(void)
{
	pno_region_ring_doorbell(g.base);
	if (__atomic_load_n(&pno_region_doorbell(g.base)->sleeping, __ATOMIC_SEQ_CST)) {
		uint64_t one = 1;
		(void)!real.write(g.bridge_efd, &one, 8);
	}
}

/*
 * After a frame on the control socket: a bridge serves control I/O only at its next I/O turn
 * (up to 100 ms away, asleep on its own thread or busy); the doorbell's control word (seen by
 * a busy bridge) and a kick that brings no ring work (to a sleeping one) make it take one now.
 */
static void kick_control(void)
{
	if (!g.base)
		return;
	/* A busy bridge looks at this word every round. */
	__atomic_add_fetch(&pno_region_doorbell(g.base)->control, 1, __ATOMIC_SEQ_CST);
	if (g.bridge_efd >= 0 &&
	    __atomic_load_n(&pno_region_doorbell(g.base)->sleeping, __ATOMIC_SEQ_CST)) {
		uint64_t one = 1;
		(void)!real.write(g.bridge_efd, &one, 8);
	}
}

/* Reserves a command slot (waiting while the ring is full), cleared, header written. */
static uint8_t *cmd_begin(struct thr *t, uint16_t op, uint32_t slot, uint32_t gen)
{
	if (__atomic_load_n(&g.bridge_dead, __ATOMIC_ACQUIRE))
		return NULL;
	for (int spins = 0;; spins++) {
		int64_t r = pno_dring_reserve(&t->cmd, 1);
		if (r == 1)
			break;
		if (r < 0)
			return NULL;
		kick_bridge();
		/* A full ring is a busy bridge or a dead one: look which, now and then. */
		if ((spins & 1023) == 1023 && bridge_gone())
			return NULL;
		if (spins > 1000000)
			return NULL;
		sched_yield();
	}
	uint8_t *d = pno_dring_prod_slot(&t->cmd, 0);
	memset(d, 0, PNO_DESC_SIZE);
	struct pno_desc_hdr *h = (struct pno_desc_hdr *)d;
	h->opcode = op;
	h->sock = slot;
	h->gen = gen;
	h->req_id = ++t->next_req;
	return d;
}

static void cmd_post(struct thr *t)
{
	pno_dring_publish(&t->cmd, 1);
	kick_bridge();
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Waits for the completion of request req_id; copies it to out. 0, or -1 (bridge gone). */
static int cmd_wait(struct thr *t, uint32_t req_id, uint8_t out[PNO_DESC_SIZE])
{
	uint64_t deadline = now_ns() + COMPLETION_TIMEOUT_NS;
	for (unsigned spins = 0;; spins++) {
		int64_t n = pno_dring_peek(&t->cpl, 16);
		for (int64_t i = 0; i < n; i++) {
			const struct pno_desc_hdr *h = pno_dring_cons_slot(&t->cpl, (uint32_t)i);
			if (h->req_id == req_id) {
				memcpy(out, h, PNO_DESC_SIZE);
				pno_dring_release(&t->cpl, (uint32_t)i + 1);
				return 0;
			}
		}
		if (n > 0) /* completions of a previous owner of this ring */
			pno_dring_release(&t->cpl, (uint32_t)n);
		if (spins < 200)
			continue;
		if ((spins & 63) == 0 && (now_ns() > deadline || bridge_gone()))
			return -1;
		if (spins < 2000)
			sched_yield();
		else
			usleep(50);
	}
}

/* Posts a command that completes and waits: the completion's result (or -EIO). */
static int cmd_call(struct thr *t, uint8_t *d, uint8_t out[PNO_DESC_SIZE])
{
	uint32_t req = ((struct pno_desc_hdr *)d)->req_id;
	cmd_post(t);
	if (cmd_wait(t, req, out) != 0)
		return -EIO;
	return ((struct pno_desc_hdr *)out)->result;
}

/* The socket lock: threads and processes sharing a socket take it around ring access. */
static void sock_lock(struct pno_sock *s)
{
	uint32_t zero = 0;
	if (__atomic_compare_exchange_n(&s->lock, &zero, 1, 0, __ATOMIC_ACQUIRE,
					__ATOMIC_RELAXED))
		return;
	for (;;) {
		uint32_t v = __atomic_exchange_n(&s->lock, 2, __ATOMIC_ACQUIRE);
		if (v == 0)
			return;
		struct timespec ts = { 0, 1000000 }; /* a dead holder cannot wedge us forever */
		real.syscall(SYS_futex, &s->lock, FUTEX_WAIT, 2, &ts, NULL, 0);
	}
}

static void sock_unlock(struct pno_sock *s)
{
	if (__atomic_exchange_n(&s->lock, 0, __ATOMIC_RELEASE) == 2)
		real.syscall(SYS_futex, &s->lock, FUTEX_WAKE, 1, NULL, NULL, 0);
}

/*
 * Tells the NIC there is new TX data or RX room, unless a doorbell is already outstanding:
 * the NIC acknowledges data_req only after it has looked at the rings, so one CMD_DATA covers
 * every write until then. Called with the socket lock held, after the ring index store.
 */
static void data_doorbell(struct psock *p, struct pno_sock *s)
{
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	uint32_t req = __atomic_load_n(&s->data_req, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&s->data_ack, __ATOMIC_SEQ_CST) != req)
		return;
	struct thr *t = thread_state();
	if (!t)
		return;
	uint8_t *d = cmd_begin(t, PNO_CMD_DATA, p->slot, p->gen);
	if (!d)
		return;
	__atomic_store_n(&s->data_req, req + 1, __ATOMIC_SEQ_CST);
	((struct pno_cmd_data *)d)->data_req = req + 1;
	cmd_post(t);
}

static void post_simple(struct psock *p, uint16_t op, int32_t a, int32_t b, int32_t c, int32_t d4)
{
	struct thr *t = thread_state();
	if (!t)
		return;
	uint8_t *d = cmd_begin(t, op, p->slot, p->gen);
	if (!d)
		return;
	int32_t *body = (int32_t *)(d + sizeof(struct pno_desc_hdr));
	body[0] = a;
	body[1] = b;
	body[2] = c;
	body[3] = d4;
	cmd_post(t);
}

static void forward_opt(struct psock *p, int level, int name, int value, int value2)
{
	post_simple(p, PNO_CMD_SETSOCKOPT, level, name, value, value2);
}

static void subscribe(struct psock *p, int waiter, uint32_t wgen, uint32_t mask, uint32_t flags)
{
	post_simple(p, PNO_CMD_SUBSCRIBE, waiter, (int32_t)wgen, (int32_t)mask, (int32_t)flags);
}

/* Subscribes the epoll set's waiter to an item's socket, with the item's events and flags. */
static void subscribe_item(struct pep *ep, struct epi *e)
{
	uint32_t ev = e->events;
	uint32_t flags = (ev & EPOLLET ? PNO_SUB_ET : 0) | (ev & EPOLLONESHOT ? PNO_SUB_ONESHOT : 0) |
			 (ev & EPOLLEXCLUSIVE ? PNO_SUB_EXCLUSIVE : 0);
	subscribe(e->p, ep->waiter, ep->wgen, ev & 0xffff, flags);
}

/* ---- 4. Readiness and blocking ---------------------------------------------------------- */

static int err_pending(const struct pno_sock *s)
{
	return __atomic_load_n(&s->err_seq, __ATOMIC_ACQUIRE) !=
	       __atomic_load_n(&s->err_ack, __ATOMIC_ACQUIRE);
}

/* SO_ERROR: the pending error, cleared by reading it (as sock_error() does). */
static int take_error(struct pno_sock *s)
{
	uint32_t seq = __atomic_load_n(&s->err_seq, __ATOMIC_ACQUIRE);
	if (seq == __atomic_load_n(&s->err_ack, __ATOMIC_ACQUIRE))
		return 0;
	int e = (int)__atomic_load_n(&s->err, __ATOMIC_ACQUIRE);
	__atomic_store_n(&s->err_ack, seq, __ATOMIC_RELEASE);
	return e;
}

static uint32_t ring_used(struct pno_ring_ctrl *c, uint32_t cap)
{
	uint32_t u = __atomic_load_n(&c->prod, __ATOMIC_ACQUIRE) -
		     __atomic_load_n(&c->cons, __ATOMIC_ACQUIRE);
	return u > cap ? cap : u;
}

static struct pno_ring_ctrl *tx_ctrl(uint32_t slot)
{
	return (struct pno_ring_ctrl *)pno_region_stream(g.base, slot);
}

static struct pno_ring_ctrl *rx_ctrl(uint32_t slot)
{
	return (struct pno_ring_ctrl *)(pno_region_stream(g.base, slot) + PNO_PAGE_SIZE +
					g.hdr->tx_bytes);
}

/* Linux's tcp_poll, over the socket line and the ring indices. */
static uint32_t sock_poll(struct psock *p)
{
	if (p->kind != P_OFFLOADED)
		return EPOLLOUT | EPOLLHUP; /* an unconnected TCP socket */
	if (__atomic_load_n(&g.bridge_dead, __ATOMIC_ACQUIRE))
		/* Connections read as reset; a listener simply gets no more connections. */
		return p->listening ? 0 : EPOLLIN | EPOLLOUT | EPOLLERR | EPOLLHUP | EPOLLRDHUP;
	struct pno_sock *s = line(p->slot);
	if (__atomic_load_n(&s->gen, __ATOMIC_ACQUIRE) != p->gen)
		return EPOLLERR | EPOLLHUP;
	uint32_t kind = __atomic_load_n(&s->kind, __ATOMIC_ACQUIRE);
	if (kind == PNO_KIND_LISTENER)
		return ring_used(rx_ctrl(p->slot), g.hdr->rx_bytes) >= sizeof(struct pno_accept_entry)
			       ? EPOLLIN
			       : 0;
	if (kind == PNO_KIND_BOUND)
		return EPOLLOUT | EPOLLHUP;
	uint32_t mask = 0;
	uint32_t state = __atomic_load_n(&s->tcp_state, __ATOMIC_ACQUIRE);
	uint32_t shut = __atomic_load_n(&s->shutdown, __ATOMIC_ACQUIRE) |
			__atomic_load_n(&s->host_shut, __ATOMIC_ACQUIRE);
	if (shut == (PNO_SHUT_RCV | PNO_SHUT_SEND) || state == 0 /* CLOSED */)
		mask |= EPOLLHUP;
	if (shut & PNO_SHUT_RCV)
		mask |= EPOLLIN | EPOLLRDNORM | EPOLLRDHUP;
	if (state != 2 /* SYN-SENT */ && state != 3 /* SYN-RECEIVED */) {
		if (ring_used(rx_ctrl(p->slot), g.hdr->rx_bytes) > 0)
			mask |= EPOLLIN | EPOLLRDNORM;
		if (!(shut & PNO_SHUT_SEND)) {
			uint32_t cap = g.hdr->tx_bytes;
			if ((uint64_t)(cap - ring_used(tx_ctrl(p->slot), cap)) * 3 >= cap)
				mask |= EPOLLOUT | EPOLLWRNORM;
		} else {
			mask |= EPOLLOUT | EPOLLWRNORM;
		}
	}
	if (err_pending(s))
		mask |= EPOLLERR;
	return mask;
}

/*
 * A forked child (an nginx worker) inherits its parent's control connection, but frames from
 * two processes on one stream would interleave, and each would read the other's
 * acknowledgements. So each process gets its own: fork() opens one for the child before it
 * forks (the parent maps the region, so the bridge or the proxy admits the HELLO_JOIN, and a
 * worker that later drops root to www-data needs no right to the control socket), and the
 * child puts it in place of the inherited one under the same fd number (dup3), so that
 * nothing watching that number is disturbed. A process forked behind our back (daemon(),
 * posix_spawn) joins the same way the first time it needs the socket. Returns the new
 * connection's fd, or -1 (the inherited connection then stays shared).
 */
static int ctl_open_join(void)
{
	if (!g.ctl_path[0])
		return -1;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", g.ctl_path);
	int fd = real.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	uint32_t hello[3] = { PNO_LAYOUT_VERSION, 1 /* HELLO_JOIN */, g.region_id };
	uint8_t type, payload[256];
	int rfd = -1, efd = -1;
	int ok = real.connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
		 send_frame(fd, 1 /* HELLO */, hello, sizeof(hello), -1) == 0;
	if (ok)
		kick_control();
	ok = ok && recv_frame(fd, &type, payload, sizeof(payload) - 1, &rfd) >= 0 && type == 2;
	if (rfd >= 0)
		real.close(rfd);
	ok = ok && recv_frame(fd, &type, payload, sizeof(payload), &efd) >= 0 && type == 4;
	if (efd >= 0)
		real.close(efd); /* the same eventfd as the inherited one */
	if (!ok) {
		real.close(fd);
		return -1;
	}
	return fd;
}

/* Puts this process's own connection `fd` in place of the inherited one. */
static void ctl_adopt(int fd)
{
	if (fd < 0 || real.dup3(fd, g.ctl_fd, O_CLOEXEC) < 0)
		warnx_once("pno: process %d shares its parent's control connection\n", (int)mypid());
	if (fd >= 0)
		real.close(fd);
	g.ctl_pid = mypid();
}

/* Caller holds g.ctl_mu. */
static void ctl_join(void)
{
	if (g.ctl_pid == mypid())
		return;
	ctl_adopt(ctl_open_join());
}

/*
 * Waiters registered ahead of need. Registering one costs a round trip to the bridge over the
 * control socket (the wake socket must be known there before the waiter may sleep), which a
 * loaded bridge serves only at its next I/O turn: a HAProxy worker's four threads, each
 * registering its epoll set as it starts, had their first health check time out after a
 * reload. So a process registers WAITER_POOL waiters in one exchange when it attaches, and
 * fork() registers the child's before it forks (over the child's own control connection,
 * lines reserved under the parent's pid and taken over by the child): a thread or a process
 * that starts takes one with no exchange at all. Only past the pool does a claim go to the
 * bridge (claim_waiter's loop below).
 */
#define WAITER_POOL 8

struct pooled_waiter {
	int idx;
	uint32_t gen;
	int rd, wr;
};

static struct {
	pthread_mutex_t mu;
	pid_t pid; /* the process the entries belong to */
	int n;
	struct pooled_waiter e[WAITER_POOL];
} pool = { .mu = PTHREAD_MUTEX_INITIALIZER };

/* Closes a registered waiter's wake socket ends; with `free_line`, gives its line back too. */
static void forget_pooled(const struct pooled_waiter *w, int free_line)
{
	if (free_line)
		__atomic_store_n(&pno_region_waiter(g.base, (uint32_t)w->idx)->owner_pid, 0,
				 __ATOMIC_RELEASE);
	g.internal[w->rd] = g.internal[w->wr] = 0;
	real.close(w->rd);
	real.close(w->wr);
}

/* Takes a free waiter line for `owner`: its index and new generation, or -1 (ENOMEM). */
static int reserve_waiter_line(pid_t owner, uint32_t *wgen)
{
	for (uint32_t i = 0; i < g.hdr->max_waiters; i++) {
		struct pno_waiter_line *wl = pno_region_waiter(g.base, i);
		uint32_t prev = __atomic_load_n(&wl->owner_pid, __ATOMIC_ACQUIRE);
		if (prev != 0 && !(kill((pid_t)prev, 0) != 0 && errno == ESRCH))
			continue;
		if (!__atomic_compare_exchange_n(&wl->owner_pid, &prev, (uint32_t)owner, 0,
						 __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
			continue;
		*wgen = __atomic_add_fetch(&wl->gen, 1, __ATOMIC_SEQ_CST);
		__atomic_store_n(&wl->sleeping, 0, __ATOMIC_RELEASE);
		__atomic_store_n(&wl->overflow, 0, __ATOMIC_RELEASE);
		return (int)i;
	}
	errno = ENOMEM;
	return -1;
}

/*
 * Registers up to `want` waiters over `ctl` (one frame each, then every acknowledgement) for
 * process `owner`; fills `out` and returns how many are registered. Caller holds g.ctl_mu.
 */
static int register_waiters(int ctl, pid_t owner, int want, struct pooled_waiter *out)
{
	int sent = 0;
	for (; sent < want; sent++) {
		int sv[2];
		if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
			break;
		uint32_t gen = 0;
		int idx = reserve_waiter_line(owner, &gen);
		uint32_t widx = (uint32_t)idx;
		if (idx < 0 || send_frame(ctl, 5 /* WAIT_FD */, &widx, 4, sv[1]) != 0) {
			if (idx >= 0)
				__atomic_store_n(&pno_region_waiter(g.base, (uint32_t)idx)->owner_pid, 0,
						 __ATOMIC_RELEASE);
			real.close(sv[0]);
			real.close(sv[1]);
			break;
		}
		out[sent] = (struct pooled_waiter){ idx, gen, hide_fd(sv[0]), hide_fd(sv[1]) };
	}
	if (sent > 0)
		kick_control();
	int acked = 0;
	for (; acked < sent; acked++) {
		uint8_t type, ack[8];
		int afd = -1;
		int n = recv_frame(ctl, &type, ack, sizeof(ack), &afd);
		if (afd >= 0)
			real.close(afd);
		if (n < 0 || type != 5)
			break;
	}
	/* Acknowledgements come in order: the unacknowledged tail is given back. */
	for (int k = acked; k < sent; k++)
		forget_pooled(&out[k], 1);
	return acked;
}

/* Fills this process's pool (after attaching). */
static void pool_fill(void)
{
	pthread_mutex_lock(&g.ctl_mu);
	pthread_mutex_lock(&pool.mu);
	ctl_join();
	pool.pid = mypid();
	pool.n = register_waiters(g.ctl_fd, mypid(), WAITER_POOL, pool.e);
	pthread_mutex_unlock(&pool.mu);
	pthread_mutex_unlock(&g.ctl_mu);
}

/* A registered waiter, set up as claim_waiter's caller wants it. */
static void use_waiter(const struct pooled_waiter *w, int *waiter, uint32_t *wgen, int *wake_rd,
		       struct pno_dring *ev, int blocking, int *wake_wr)
{
	if (!blocking)
		real.fcntl(w->rd, F_SETFL, real.fcntl(w->rd, F_GETFL) | O_NONBLOCK);
	pno_region_ev_consumer(ev, g.base, (uint32_t)w->idx);
	/* Events of a previous owner are not ours. */
	int64_t stale = pno_dring_peek(ev, g.hdr->ev_slots);
	if (stale > 0)
		pno_dring_release(ev, (uint32_t)stale);
	if (wake_wr) {
		*wake_wr = w->wr; /* to wake itself (a nested set with ready items) */
	} else {
		g.internal[w->wr] = 0;
		real.close(w->wr);
	}
	*waiter = w->idx;
	*wgen = w->gen;
	*wake_rd = w->rd;
}

/*
 * Claims a waiter entry with a wake socket the bridge knows (a blocking one for a thread's
 * blocking calls, a non-blocking one for an epoll set): from the pool, or past it in an
 * exchange of its own. 0, or -1.
 */
static int claim_waiter(int *waiter, uint32_t *wgen, int *wake_rd, struct pno_dring *ev,
			int blocking, int *wake_wr)
{
	struct pooled_waiter w;
	int have = 0;
	pthread_mutex_lock(&pool.mu);
	if (pool.pid == mypid() && pool.n > 0) {
		w = pool.e[--pool.n];
		have = 1;
	}
	pthread_mutex_unlock(&pool.mu);
	if (!have) {
		pthread_mutex_lock(&g.ctl_mu);
		ctl_join();
		have = register_waiters(g.ctl_fd, mypid(), 1, &w);
		pthread_mutex_unlock(&g.ctl_mu);
		if (!have)
			return -1;
	}
	use_waiter(&w, waiter, wgen, wake_rd, ev, blocking, wake_wr);
	return 0;
}

static void release_waiter(int waiter, uint32_t wgen)
{
	struct thr *t = thread_state();
	if (t) {
		uint8_t *d = cmd_begin(t, PNO_CMD_WAITER_RELEASE, PNO_SOCK_NONE, 0);
		if (d) {
			((struct pno_cmd_waiter_release *)d)->waiter = (uint32_t)waiter;
			((struct pno_cmd_waiter_release *)d)->waiter_gen = wgen;
			cmd_post(t);
		}
	}
	__atomic_store_n(&pno_region_waiter(g.base, (uint32_t)waiter)->owner_pid, 0,
			 __ATOMIC_RELEASE);
}

static void drain_wake(int fd)
{
	char buf[64];
	while (real.recvfrom(fd, buf, sizeof(buf), MSG_DONTWAIT, NULL, NULL) > 0)
		;
}

/*
 * Takes one wakeup off an epoll set's wake socket: the bridge sends one per sleep, so one
 * recv is enough (a second, level-triggered, shows up at the next wait); draining to EAGAIN
 * cost a system call per wakeup for nothing.
 */
static void take_wake(int fd)
{
	char buf[64];
	real.recvfrom(fd, buf, sizeof(buf), MSG_DONTWAIT, NULL, NULL);
}

/* The calling thread's waiter for blocking calls, claimed on first use. */
static struct thr *thread_waiter(void)
{
	struct thr *t = thread_state();
	if (!t)
		return NULL;
	if (t->waiter < 0 && claim_waiter(&t->waiter, &t->wgen, &t->wake_rd, &t->ev, 1, NULL) != 0)
		return NULL;
	return t;
}

static void ensure_thread_sub(struct thr *t, struct psock *p)
{
	if (p->tw_waiter == t->waiter && p->tw_gen == t->wgen)
		return;
	p->tw_waiter = t->waiter;
	p->tw_gen = t->wgen;
	subscribe(p, t->waiter, t->wgen, EPOLLIN | EPOLLOUT | EPOLLRDHUP, 0);
}

/*
 * Blocks until one of the sockets may have changed or timeout_ms pass (-1: no limit), also
 * waking for the kernel pollfds given. Says it sleeps, re-checks `ready` (the caller's
 * condition), then sleeps in the kernel on the wake socket. Returns the kernel poll's result
 * (-1 with errno EINTR on a signal).
 */
static int block_on(struct psock **ps, int nps, int (*ready)(void *), void *arg,
		    struct pollfd *kfds, int nk, int timeout_ms, const sigset_t *mask)
{
	struct thr *t = thread_waiter();
	if (!t) {
		errno = ENOMEM;
		return -1;
	}
	for (int i = 0; i < nps; i++)
		ensure_thread_sub(t, ps[i]);
	struct pno_waiter_line *wl = pno_region_waiter(g.base, (uint32_t)t->waiter);
	__atomic_store_n(&wl->sleeping, 1, __ATOMIC_SEQ_CST);
	int64_t n = pno_dring_peek(&t->ev, g.hdr->ev_slots);
	if (n > 0)
		pno_dring_release(&t->ev, (uint32_t)n);
	if (ready(arg)) {
		__atomic_store_n(&wl->sleeping, 0, __ATOMIC_RELEASE);
		return 0;
	}
	if (bridge_gone()) {
		__atomic_store_n(&wl->sleeping, 0, __ATOMIC_RELEASE);
		return 0; /* the callers' conditions are all true now: sockets read as reset */
	}
	struct pollfd stack[64];
	struct pollfd *fds = nk + 2 <= 64 ? stack : malloc(sizeof(*fds) * (size_t)(nk + 2));
	if (!fds)
		return -1;
	for (int i = 0; i < nk; i++)
		fds[i] = kfds[i];
	fds[nk] = (struct pollfd){ .fd = t->wake_rd, .events = POLLIN };
	/* The control socket hangs up when the bridge goes: wake then too. */
	fds[nk + 1] = (struct pollfd){ .fd = g.ctl_fd, .events = POLLRDHUP };
	int r;
	if (nk == 0 && !mask && timeout_ms < 0) {
		/*
		 * A blocking socket call with no timeout sleeps in a blocking recv on the wake
		 * socket: like the socket call it stands for, the kernel restarts it after a signal
		 * whose handler has SA_RESTART, and returns EINTR otherwise (poll never restarts).
		 */
		char byte;
		ssize_t got = real.recvfrom(t->wake_rd, &byte, 1, 0, NULL, NULL);
		if (got == 0)
			bridge_gone(); /* the bridge's end of the wake socket is closed */
		r = got >= 0 ? 1 : -1;
		fds[nk].revents = r > 0 ? POLLIN : 0;
	} else if (mask) {
		struct timespec ts = { timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000000 };
		r = real.ppoll(fds, (nfds_t)nk + 2, timeout_ms < 0 ? NULL : &ts, mask);
	} else {
		r = real.poll(fds, (nfds_t)nk + 2, timeout_ms);
	}
	if (r > 0 && fds[nk + 1].revents)
		bridge_gone();
	int saved = errno;
	__atomic_store_n(&wl->sleeping, 0, __ATOMIC_RELEASE);
	if (r > 0 && fds[nk].revents)
		drain_wake(t->wake_rd);
	for (int i = 0; i < nk; i++)
		kfds[i].revents = fds[i].revents;
	if (fds != stack)
		free(fds);
	errno = saved;
	return r;
}

struct wait_cond {
	struct psock *p;
	uint32_t events;
};

static int cond_ready(void *arg)
{
	struct wait_cond *c = arg;
	return (sock_poll(c->p) & (c->events | EPOLLERR | EPOLLHUP)) != 0;
}

/* Waits for events on one socket (SO_RCVTIMEO-like timeout_ms, 0 = none). 0, or -errno. */
static int wait_sock(struct psock *p, uint32_t events, int timeout_ms)
{
	struct wait_cond c = { p, events };
	uint64_t deadline = timeout_ms > 0 ? now_ns() + (uint64_t)timeout_ms * 1000000 : 0;
	while (!cond_ready(&c)) {
		int left = -1;
		if (deadline) {
			uint64_t now = now_ns();
			if (now >= deadline)
				return -EAGAIN;
			left = (int)((deadline - now + 999999) / 1000000);
		}
		if (block_on(&p, 1, cond_ready, &c, NULL, 0, left, NULL) < 0 && errno == EINTR)
			return -EINTR;
	}
	return 0;
}

/* ---- 5. The socket calls ---------------------------------------------------------------- */

static int fail(int e)
{
	errno = e;
	return -1;
}

static void register_fd(int fd, struct psock *p)
{
	__atomic_store_n(&g.files[fd], p, __ATOMIC_RELEASE);
}

/* The socket became ours in the region: holder and reference accounting, options, epoll. */
static void became_offloaded_quiet(struct psock *p, uint32_t slot, uint32_t gen)
{
	p->slot = slot;
	p->gen = gen;
	p->tw_waiter = -1;
	__atomic_add_fetch(&line(slot)->holders, 1, __ATOMIC_SEQ_CST);
	__atomic_add_fetch(&proc_refs()[slot], (uint16_t)p->fdrefs, __ATOMIC_SEQ_CST);
	__atomic_store_n(&p->kind, P_OFFLOADED, __ATOMIC_RELEASE);
}

/* `pno ls` tells an offloaded fd from a kernel one by its placeholder's inode (socket:[N]). */
static void note_placeholder(int fd, const struct psock *p)
{
	struct stat st;
	if (fstat(fd, &st) == 0)
		__atomic_store_n(&line(p->slot)->placeholder_ino, (uint64_t)st.st_ino,
				 __ATOMIC_RELEASE);
}

static void became_offloaded(struct psock *p, uint32_t slot, uint32_t gen)
{
	became_offloaded_quiet(p, slot, gen);
	if (p->nodelay)
		forward_opt(p, IPPROTO_TCP, TCP_NODELAY, 1, 0);
	if (p->cork)
		forward_opt(p, IPPROTO_TCP, TCP_CORK, 1, 0);
	if (p->keepalive)
		forward_opt(p, SOL_SOCKET, SO_KEEPALIVE, 1, 0);
	if (p->keepidle)
		forward_opt(p, IPPROTO_TCP, TCP_KEEPIDLE, p->keepidle, 0);
	if (p->keepintvl)
		forward_opt(p, IPPROTO_TCP, TCP_KEEPINTVL, p->keepintvl, 0);
	if (p->keepcnt)
		forward_opt(p, IPPROTO_TCP, TCP_KEEPCNT, p->keepcnt, 0);
	if (p->linger >= 0)
		forward_opt(p, SOL_SOCKET, SO_LINGER, 1, p->linger);
	for (struct epi *e = p->epis; e; e = e->sock_next) {
		struct pep *ep = e->ep;
		pthread_mutex_lock(&ep->mu);
		if (ep->waiter >= 0) {
			e->slot_next = ep->byslot[slot];
			ep->byslot[slot] = e;
			subscribe_item(ep, e);
		}
		pthread_mutex_unlock(&ep->mu);
	}
}

static struct psock *new_psock(int nonblock)
{
	struct psock *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->kind = P_PENDING;
	p->fdrefs = 1;
	p->nonblock = nonblock;
	p->linger = -1;
	p->tw_waiter = -1;
	return p;
}

EXPORT int socket(int domain, int type, int protocol)
{
	REAL();
	int fd = real.socket(domain, type, protocol);
	if (fd < 0 || fd >= MAX_FDS || domain != AF_INET || (type & 0xf) != SOCK_STREAM ||
	    (protocol != 0 && protocol != IPPROTO_TCP))
		return fd;
	if (g.disabled)
		return fd;
	struct psock *p = new_psock((type & SOCK_NONBLOCK) != 0);
	if (p)
		register_fd(fd, p);
	return fd;
}

/* The socket stays in the kernel: forget it. */
static void keep_in_kernel(int fd, struct psock *p)
{
	pthread_mutex_lock(&g.mu);
	if (g.files[fd] == p) {
		__atomic_store_n(&g.files[fd], NULL, __ATOMIC_RELEASE);
		if (--p->fdrefs == 0 && !p->epis)
			free(p);
	}
	pthread_mutex_unlock(&g.mu);
}

static uint32_t bind_opts(struct psock *p)
{
	return (p->reuseaddr ? PNO_BIND_REUSEADDR : 0) | (p->reuseport ? PNO_BIND_REUSEPORT : 0);
}

/* Offloads a pending socket by binding it in the bridge. 0 or -errno. */
static int offload_bind(struct psock *p, uint32_t ip, uint16_t port)
{
	struct thr *t = thread_state();
	if (!t)
		return -ENOBUFS;
	uint8_t *d = cmd_begin(t, PNO_CMD_BIND, PNO_SOCK_NONE, 0);
	if (!d)
		return -EIO;
	struct pno_cmd_bind *b = (struct pno_cmd_bind *)d;
	b->addr.family = AF_INET;
	b->addr.port = port;
	uint32_t nip = htonl(ip);
	memcpy(b->addr.addr, &nip, 4);
	b->opts = bind_opts(p);
	uint8_t out[PNO_DESC_SIZE];
	int r = cmd_call(t, d, out);
	if (r < 0)
		return r;
	const struct pno_desc_hdr *h = (const struct pno_desc_hdr *)out;
	became_offloaded(p, h->sock, h->gen);
	return 0;
}

static int kernel_port(uint16_t port)
{
	for (int i = 0; i < pol.n_ports; i++)
		if (pol.kernel_ports[i] == port)
			return 1;
	return 0;
}

static int policy_bind(uint32_t ip, uint16_t port)
{
	if (kernel_port(port) || pol.listen_mode == 2)
		return 0;
	return (ip == INADDR_ANY && pol.listen_mode == 0) || ip == g.local_ip;
}

static int policy_connect(uint32_t ip, uint16_t port)
{
	if (ip == 0 || (ip & 0xff000000u) == 0x7f000000u || kernel_port(port))
		return 0;
	for (int i = 0; i < pol.n_nets; i++)
		if (!pol.nets[i].offload && (ip & pol.nets[i].mask) == pol.nets[i].net)
			return 0;
	for (int i = 0; i < pol.n_nets; i++)
		if (pol.nets[i].offload && (ip & pol.nets[i].mask) == pol.nets[i].net)
			return 1;
	return 0;
}

EXPORT int bind(int fd, const struct sockaddr *addr, socklen_t len)
{
	REAL();
	struct psock *p = ours(fd);
	if (!p || p->kind != P_PENDING || !addr || len < sizeof(struct sockaddr_in) ||
	    addr->sa_family != AF_INET)
		return real.bind(fd, addr, len);
	const struct sockaddr_in *in = (const struct sockaddr_in *)addr;
	uint32_t ip = ntohl(in->sin_addr.s_addr);
	if (!attach() || !policy_bind(ip, ntohs(in->sin_port))) {
		keep_in_kernel(fd, p);
		return real.bind(fd, addr, len);
	}
	int r = offload_bind(p, ip, ntohs(in->sin_port));
	if (r < 0)
		return fail(-r);
	note_placeholder(fd, p);
	p->bound_any = ip == INADDR_ANY;
	return 0;
}

EXPORT int listen(int fd, int backlog)
{
	REAL();
	struct psock *p = ours(fd);
	if (!p)
		return real.listen(fd, backlog);
	if (p->kind == P_PENDING) {
		/* listen() without bind() binds INADDR_ANY on an ephemeral port, as Linux does. */
		if (!attach() || !policy_bind(INADDR_ANY, 0)) {
			keep_in_kernel(fd, p);
			return real.listen(fd, backlog);
		}
		int r = offload_bind(p, INADDR_ANY, 0);
		if (r < 0)
			return fail(-r);
		note_placeholder(fd, p);
		p->bound_any = 1;
	}
	struct thr *t = thread_state();
	if (!t)
		return fail(ENOBUFS);
	uint8_t *d = cmd_begin(t, PNO_CMD_LISTEN, p->slot, p->gen);
	if (!d)
		return fail(EIO);
	((struct pno_cmd_listen *)d)->backlog = backlog;
	uint8_t out[PNO_DESC_SIZE];
	int r = cmd_call(t, d, out);
	if (r < 0)
		return fail(-r);
	p->listening = 1;
	if (p->bound_any && pol.loopback && !p->loop_listening) {
		/*
		 * A listener on INADDR_ANY also answers on loopback, through its placeholder (as
		 * OpenOnload does): host-local clients reach it with the kernel's TCP, and
		 * accept() hands them out as plain kernel sockets.
		 */
		struct sockaddr_in lo = { .sin_family = AF_INET,
					  .sin_port = htons(__atomic_load_n(&line(p->slot)->local_port,
									    __ATOMIC_ACQUIRE)),
					  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		int one = 1;
		real.setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (real.bind(fd, (struct sockaddr *)&lo, sizeof(lo)) == 0 &&
		    real.listen(fd, backlog) == 0) {
			p->loop_listening = 1;
			/* Sets it joined before it listened watch the placeholder from now on. */
			pthread_mutex_lock(&g.mu);
			for (struct epi *e = p->epis; e; e = e->sock_next) {
				struct epoll_event kev = { .events = e->events, .data = e->data };
				real.epoll_ctl(e->ep->kfd, EPOLL_CTL_ADD, fd, &kev);
			}
			pthread_mutex_unlock(&g.mu);
		}
	}
	return 0;
}

static int connect_state(struct psock *p)
{
	struct pno_sock *s = line(p->slot);
	if (err_pending(s))
		return -1;
	uint32_t st = __atomic_load_n(&s->tcp_state, __ATOMIC_ACQUIRE);
	return st >= 4 /* ESTABLISHED and after */ ? 1 : st == 0 ? -1 : 0;
}

static int connected_ready(void *arg)
{
	return connect_state(arg) != 0;
}

EXPORT int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
	REAL();
	struct psock *p = ours(fd);
	if (!p)
		return real.connect(fd, addr, len);
	if (!addr || len < sizeof(struct sockaddr_in) || addr->sa_family != AF_INET) {
		if (p->kind == P_PENDING) {
			keep_in_kernel(fd, p);
			return real.connect(fd, addr, len);
		}
		return fail(addr && addr->sa_family == AF_UNSPEC ? EOPNOTSUPP : EAFNOSUPPORT);
	}
	const struct sockaddr_in *in = (const struct sockaddr_in *)addr;
	uint32_t ip = ntohl(in->sin_addr.s_addr);
	if (p->kind == P_PENDING && (!attach() || !policy_connect(ip, ntohs(in->sin_port)))) {
		keep_in_kernel(fd, p);
		return real.connect(fd, addr, len);
	}
	if (p->kind == P_OFFLOADED) {
		uint32_t kind = __atomic_load_n(&line(p->slot)->kind, __ATOMIC_ACQUIRE);
		if (kind == PNO_KIND_CONN) {
			int st = connect_state(p);
			if (st > 0)
				return fail(EISCONN);
			if (st == 0)
				return fail(p->nonblock ? EALREADY : EALREADY);
			int e = take_error(line(p->slot));
			return fail(e ? e : ECONNREFUSED);
		}
		if (kind == PNO_KIND_LISTENER)
			return fail(EISCONN);
	}
	struct thr *t = thread_state();
	if (!t)
		return fail(ENOBUFS);
	int bound = p->kind == P_OFFLOADED;
	uint8_t *d = cmd_begin(t, PNO_CMD_CONNECT, bound ? p->slot : PNO_SOCK_NONE,
			       bound ? p->gen : 0);
	if (!d)
		return fail(EIO);
	struct pno_cmd_connect *c = (struct pno_cmd_connect *)d;
	c->addr.family = AF_INET;
	c->addr.port = ntohs(in->sin_port);
	memcpy(c->addr.addr, &in->sin_addr.s_addr, 4);
	c->opts = bind_opts(p);
	uint8_t out[PNO_DESC_SIZE];
	int r = cmd_call(t, d, out);
	if (r < 0)
		return fail(-r);
	if (!bound) {
		const struct pno_desc_hdr *h = (const struct pno_desc_hdr *)out;
		became_offloaded(p, h->sock, h->gen);
		note_placeholder(fd, p);
	}
	if (p->nonblock)
		return fail(EINPROGRESS);
	struct psock *ps[1] = { p };
	while (connect_state(p) == 0) {
		if (block_on(ps, 1, connected_ready, p, NULL, 0, -1, NULL) < 0 && errno == EINTR)
			return fail(EINTR);
	}
	if (connect_state(p) < 0) {
		int e = take_error(line(p->slot));
		return fail(e ? e : ECONNREFUSED);
	}
	return 0;
}

static int listener_ready(void *arg)
{
	return (sock_poll(arg) & (EPOLLIN | EPOLLERR | EPOLLHUP)) != 0;
}

EXPORT int accept4(int fd, struct sockaddr *addr, socklen_t *alen, int flags)
{
	REAL();
	struct psock *p = offloaded(fd);
	if (!p)
		return real.accept4(fd, addr, alen, flags);
	if (!p->listening)
		return fail(EINVAL);
	struct pno_sock *s = line(p->slot);
	struct pno_accept_entry e;
	for (;;) {
		int got = 0;
		sock_lock(s);
		struct pno_bring rx;
		pno_region_rx_consumer(&rx, g.base, p->slot);
		int64_t avail = pno_bring_readable(&rx);
		if (avail >= (int64_t)sizeof(e)) {
			pno_bring_read(&rx, &e, sizeof(e));
			got = 1;
			if (__atomic_load_n(&s->rx_want, __ATOMIC_SEQ_CST))
				data_doorbell(p, s);
		}
		sock_unlock(s);
		if (got)
			break;
		if (p->loop_listening) {
			struct pollfd pf = { .fd = fd, .events = POLLIN };
			if (real.poll(&pf, 1, 0) == 1) {
				int k = real.accept4(fd, addr, alen, flags);
				if (k >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
					return k; /* a loopback client: a kernel socket */
			}
		}
		if (p->nonblock)
			return fail(EAGAIN);
		struct psock *ps[1] = { p };
		struct pollfd kf = { .fd = fd, .events = POLLIN };
		if (block_on(ps, 1, listener_ready, p, p->loop_listening ? &kf : NULL,
			     p->loop_listening ? 1 : 0, -1, NULL) < 0 &&
		    errno == EINTR)
			return fail(EINTR);
	}
	if (e.sock >= g.hdr->max_sockets)
		return fail(ECONNABORTED);
	int nfd = real.socket(AF_INET, SOCK_STREAM | (flags & (SOCK_NONBLOCK | SOCK_CLOEXEC)), 0);
	struct psock *c = nfd >= 0 && nfd < MAX_FDS ? new_psock((flags & SOCK_NONBLOCK) != 0) : NULL;
	if (!c) {
		/* No fd: the connection goes as Linux's would when accept fails after the pop. */
		struct psock tmp = { .kind = P_OFFLOADED, .slot = e.sock, .gen = e.gen };
		post_simple(&tmp, PNO_CMD_CLOSE, 0, 0, 0, 0);
		if (nfd >= 0)
			real.close(nfd);
		return fail(EMFILE);
	}
	c->nodelay = p->nodelay;
	c->keepalive = p->keepalive;
	c->keepidle = p->keepidle;
	c->keepintvl = p->keepintvl;
	c->keepcnt = p->keepcnt;
	c->reuseaddr = p->reuseaddr;
	c->linger = p->linger;
	c->inherited = 1;
	/* The NIC gave the connection the listener's options already: nothing to forward. */
	became_offloaded_quiet(c, e.sock, e.gen);
	register_fd(nfd, c);
	note_placeholder(nfd, c);
	if (addr && alen) {
		struct sockaddr_in in = { .sin_family = AF_INET, .sin_port = htons(e.peer_port),
					  .sin_addr.s_addr = htonl(e.peer_ip) };
		memcpy(addr, &in, *alen < sizeof(in) ? *alen : sizeof(in));
		*alen = sizeof(in);
	}
	return nfd;
}

EXPORT int accept(int fd, struct sockaddr *addr, socklen_t *alen)
{
	return accept4(fd, addr, alen, 0);
}

/* Copies len bytes at offset off past the consumer index out of an RX ring, without release. */
static void ring_peek(struct pno_bring *r, uint32_t off, void *dst, uint32_t len)
{
	uint32_t pos = (r->own + off) & (r->cap - 1);
	uint32_t first = len < r->cap - pos ? len : r->cap - pos;
	memcpy(dst, r->data + pos, first);
	memcpy((uint8_t *)dst + first, r->data, len - first);
}

/* recv() on an offloaded socket: bytes, 0 at end of stream, or -errno. */
static ssize_t pno_recv(struct psock *p, const struct iovec *iov, int iovcnt, int flags)
{
	struct pno_sock *s = line(p->slot);
	size_t want = 0;
	for (int i = 0; i < iovcnt; i++)
		want += iov[i].iov_len;
	if (want == 0)
		return 0;
	size_t done = 0;
	int nonblock = p->nonblock || (flags & MSG_DONTWAIT);
	for (;;) {
		if (__atomic_load_n(&g.bridge_dead, __ATOMIC_ACQUIRE))
			return done ? (ssize_t)done : -ECONNRESET;
		if (__atomic_load_n(&s->gen, __ATOMIC_ACQUIRE) != p->gen)
			return done ? (ssize_t)done : -EBADF;
		sock_lock(s);
		struct pno_bring rx;
		pno_region_rx_consumer(&rx, g.base, p->slot);
		int64_t avail = pno_bring_readable(&rx);
		if (avail < 0)
			avail = 0;
		if (avail > 0) {
			size_t skip = done, n = 0;
			for (int i = 0; i < iovcnt && (int64_t)n < avail; i++) {
				size_t l = iov[i].iov_len;
				if (skip >= l) {
					skip -= l;
					continue;
				}
				size_t take = l - skip;
				if ((int64_t)(n + take) > avail)
					take = (size_t)avail - n;
				if (flags & MSG_PEEK)
					ring_peek(&rx, (uint32_t)n, (uint8_t *)iov[i].iov_base + skip,
						  (uint32_t)take);
				else
					pno_bring_read(&rx, (uint8_t *)iov[i].iov_base + skip,
						       (uint32_t)take);
				n += take;
				skip = 0;
			}
			done += n;
			if (!(flags & MSG_PEEK) && __atomic_load_n(&s->rx_want, __ATOMIC_SEQ_CST))
				data_doorbell(p, s);
			sock_unlock(s);
			if (!(flags & MSG_WAITALL) || done >= want || (flags & MSG_PEEK))
				return (ssize_t)done;
			continue;
		}
		sock_unlock(s);
		if (done > 0 && !(flags & MSG_WAITALL))
			return (ssize_t)done;
		uint32_t shut = __atomic_load_n(&s->shutdown, __ATOMIC_ACQUIRE) |
				__atomic_load_n(&s->host_shut, __ATOMIC_ACQUIRE);
		int e = take_error(s);
		if (e)
			return done ? (ssize_t)done : -e;
		if (shut & PNO_SHUT_RCV)
			return (ssize_t)done;
		uint32_t kind = __atomic_load_n(&s->kind, __ATOMIC_ACQUIRE);
		if (kind != PNO_KIND_CONN)
			return -ENOTCONN;
		if (nonblock)
			return done ? (ssize_t)done : -EAGAIN;
		int r = wait_sock(p, EPOLLIN | EPOLLRDHUP, p->rcvtimeo_ms);
		if (r < 0)
			return done ? (ssize_t)done : r;
	}
}

/* send() on an offloaded socket: bytes taken, or -errno (SIGPIPE raised for EPIPE). */
static ssize_t pno_send(struct psock *p, const struct iovec *iov, int iovcnt, int flags)
{
	struct pno_sock *s = line(p->slot);
	size_t want = 0;
	for (int i = 0; i < iovcnt; i++)
		want += iov[i].iov_len;
	size_t done = 0;
	int nonblock = p->nonblock || (flags & MSG_DONTWAIT);
	for (;;) {
		if (__atomic_load_n(&g.bridge_dead, __ATOMIC_ACQUIRE))
			return done ? (ssize_t)done : -ECONNRESET;
		if (__atomic_load_n(&s->gen, __ATOMIC_ACQUIRE) != p->gen)
			return done ? (ssize_t)done : -EBADF;
		uint32_t shut = __atomic_load_n(&s->shutdown, __ATOMIC_ACQUIRE);
		int e = 0;
		if (err_pending(s))
			e = take_error(s);
		if (e)
			return done ? (ssize_t)done : -e;
		if (shut & PNO_SHUT_SEND) {
			if (done)
				return (ssize_t)done;
			if (!(flags & MSG_NOSIGNAL))
				raise(SIGPIPE);
			return -EPIPE;
		}
		uint32_t kind = __atomic_load_n(&s->kind, __ATOMIC_ACQUIRE);
		uint32_t st = __atomic_load_n(&s->tcp_state, __ATOMIC_ACQUIRE);
		if (kind != PNO_KIND_CONN)
			return -ENOTCONN;
		if (want == 0)
			return 0;
		size_t n = 0;
		if (st >= 4) {
			sock_lock(s);
			struct pno_bring tx;
			pno_region_tx_producer(&tx, g.base, p->slot);
			int64_t room = pno_bring_writable(&tx);
			size_t skip = done;
			for (int i = 0; i < iovcnt && room > 0; i++) {
				size_t l = iov[i].iov_len;
				if (skip >= l) {
					skip -= l;
					continue;
				}
				size_t take = l - skip;
				if ((int64_t)take > room)
					take = (size_t)room;
				int64_t w = pno_bring_write(&tx, (const uint8_t *)iov[i].iov_base + skip,
							    (uint32_t)take);
				if (w <= 0)
					break;
				n += (size_t)w;
				room -= w;
				skip = 0;
			}
			if (n > 0)
				data_doorbell(p, s);
			sock_unlock(s);
		}
		done += n;
		if (done >= want)
			return (ssize_t)done;
		if (nonblock)
			return done ? (ssize_t)done : -EAGAIN;
		int r = wait_sock(p, EPOLLOUT, p->sndtimeo_ms);
		if (r < 0)
			return done ? (ssize_t)done : r;
	}
}

static ssize_t ret(ssize_t r)
{
	if (r < 0) {
		errno = (int)-r;
		return -1;
	}
	return r;
}

EXPORT ssize_t read(int fd, void *buf, size_t n)
{
	REAL();
	struct psock *p = offloaded(fd);
	if (!p)
		return real.read(fd, buf, n);
	struct iovec iov = { buf, n };
	return ret(pno_recv(p, &iov, 1, 0));
}

EXPORT ssize_t write(int fd, const void *buf, size_t n)
{
	REAL();
	struct psock *p = offloaded(fd);
	if (!p)
		return real.write(fd, buf, n);
	struct iovec iov = { (void *)buf, n };
	return ret(pno_send(p, &iov, 1, 0));
}

EXPORT ssize_t readv(int fd, const struct iovec *iov, int n)
{
	REAL();
	struct psock *p = offloaded(fd);
	return p ? ret(pno_recv(p, iov, n, 0)) : real.readv(fd, iov, n);
}

EXPORT ssize_t writev(int fd, const struct iovec *iov, int n)
{
	REAL();
	struct psock *p = offloaded(fd);
	return p ? ret(pno_send(p, iov, n, 0)) : real.writev(fd, iov, n);
}

EXPORT ssize_t recvfrom(int fd, void *buf, size_t n, int flags, struct sockaddr *a, socklen_t *al)
{
	REAL();
	struct psock *p = offloaded(fd);
	if (!p)
		return real.recvfrom(fd, buf, n, flags, a, al);
	struct iovec iov = { buf, n };
	ssize_t r = ret(pno_recv(p, &iov, 1, flags));
	if (r >= 0 && a && al)
		*al = 0; /* TCP reports no source address (msg_namelen 0) */
	return r;
}

EXPORT ssize_t recv(int fd, void *buf, size_t n, int flags)
{
	return recvfrom(fd, buf, n, flags, NULL, NULL);
}

EXPORT ssize_t sendto(int fd, const void *buf, size_t n, int flags, const struct sockaddr *a,
		      socklen_t al)
{
	REAL();
	struct psock *p = offloaded(fd);
	if (!p)
		return real.sendto(fd, buf, n, flags, a, al);
	struct iovec iov = { (void *)buf, n };
	return ret(pno_send(p, &iov, 1, flags));
}

EXPORT ssize_t send(int fd, const void *buf, size_t n, int flags)
{
	return sendto(fd, buf, n, flags, NULL, 0);
}

/*
 * SCM_RIGHTS. The kernel passes an offloaded fd as its placeholder; the shim makes the
 * placeholder mean the socket again on the other side. That works only between processes of
 * one application (one region: a master and its workers, a process and the image it execs):
 * the sender checks that its peer (SO_PEERCRED) is in the region's process table and refuses
 * otherwise with EOPNOTSUPP and a warning, since a process outside the region could do nothing
 * with the socket but hold a dead placeholder. A passed socket counts one more holder while
 * it is in flight, so that the sender closing its fd at once cannot close it; the receiver
 * finds it by its placeholder's inode and takes that hold over. A message that is never
 * received keeps its sockets open until the application's last process is gone.
 */
/* This process's psock of a region socket (dup()s of one socket share one), or NULL. */
static struct psock *psock_of(uint32_t slot, uint32_t gen)
{
	for (int fd = 0; fd < MAX_FDS; fd++) {
		struct psock *q = g.files[fd];
		if (q && q->kind == P_OFFLOADED && q->slot == slot && q->gen == gen)
			return q;
	}
	return NULL;
}

/* A psock for a region socket this process takes over by fd (passed or inherited), or NULL. */
static struct psock *adopted_psock(int fd, uint32_t slot, uint32_t gen)
{
	struct psock *p = new_psock((real.fcntl(fd, F_GETFL) & O_NONBLOCK) != 0);
	if (p) {
		p->slot = slot;
		p->gen = gen;
	}
	return p;
}

/* One holder of the socket fewer; the last one gone closes it, as close() would. */
static void drop_holder(struct psock *p)
{
	if (__atomic_sub_fetch(&line(p->slot)->holders, 1, __ATOMIC_SEQ_CST) == 0)
		post_simple(p, PNO_CMD_CLOSE, p->linger, 0, 0, 0);
}

static int in_region(pid_t pid)
{
	for (uint32_t i = 0; i < g.hdr->max_procs; i++)
		if (__atomic_load_n(&pno_region_proc(g.base, i)->pid, __ATOMIC_ACQUIRE) ==
		    (uint32_t)pid)
			return 1;
	return 0;
}

/* Calls `each` for every fd of every SCM_RIGHTS message of `msg`; stops at a non-zero result. */
static int each_passed_fd(const struct msghdr *msg, int (*each)(int fd, void *arg), void *arg)
{
	if (!msg->msg_control || msg->msg_controllen < sizeof(struct cmsghdr))
		return 0;
	for (struct cmsghdr *c = CMSG_FIRSTHDR((struct msghdr *)msg); c;
	     c = CMSG_NXTHDR((struct msghdr *)msg, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		const int *fds = (const int *)CMSG_DATA(c);
		for (size_t i = 0; i < n; i++) {
			int fd;
			memcpy(&fd, fds + i, sizeof(fd));
			int r = each(fd, arg);
			if (r)
				return r;
		}
	}
	return 0;
}

static int count_offloaded(int fd, void *arg)
{
	if (offloaded(fd))
		(*(int *)arg)++;
	return 0;
}

static int hold_in_flight(int fd, void *arg)
{
	struct psock *p = offloaded(fd);
	if (p)
		__atomic_add_fetch(&line(p->slot)->holders, 1, __ATOMIC_SEQ_CST);
	(void)arg;
	return 0;
}

static int drop_in_flight(int fd, void *arg)
{
	struct psock *p = offloaded(fd);
	if (p)
		drop_holder(p);
	(void)arg;
	return 0;
}

/* A received fd whose placeholder is one of the region's sockets becomes that socket. */
static int adopt_passed(int fd, void *arg)
{
	(void)arg;
	struct stat st;
	if (fd < 0 || fd >= MAX_FDS || fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode))
		return 0;
	pthread_mutex_lock(&g.mu);
	for (uint32_t slot = 0; slot < g.hdr->max_sockets; slot++) {
		struct pno_sock *s = line(slot);
		if (__atomic_load_n(&s->placeholder_ino, __ATOMIC_ACQUIRE) != (uint64_t)st.st_ino ||
		    __atomic_load_n(&s->kind, __ATOMIC_ACQUIRE) == PNO_KIND_FREE)
			continue;
		uint32_t gen = __atomic_load_n(&s->gen, __ATOMIC_ACQUIRE);
		struct psock *p = psock_of(slot, gen);
		if (p) {
			/* We hold it already: the in-flight hold is one too many. */
			p->fdrefs++;
			drop_holder(p);
		} else {
			p = adopted_psock(fd, slot, gen);
			if (!p)
				break;
			p->listening = __atomic_load_n(&s->kind, __ATOMIC_ACQUIRE) ==
				       PNO_KIND_LISTENER;
			p->bound_any = s->local_ip == 0;
			p->kind = P_OFFLOADED;
		}
		__atomic_add_fetch(&proc_refs()[slot], 1, __ATOMIC_SEQ_CST);
		register_fd(fd, p);
		break;
	}
	pthread_mutex_unlock(&g.mu);
	return 0;
}

EXPORT ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
	REAL();
	struct psock *p = offloaded(fd);
	if (!p) {
		ssize_t r = real.recvmsg(fd, msg, flags);
		if (r >= 0 && g.attached > 0 && msg->msg_controllen > 0)
			each_passed_fd(msg, adopt_passed, NULL);
		return r;
	}
	ssize_t r = ret(pno_recv(p, msg->msg_iov, (int)msg->msg_iovlen, flags));
	if (r >= 0) {
		msg->msg_namelen = 0;
		msg->msg_controllen = 0;
		msg->msg_flags = 0;
	}
	return r;
}

EXPORT ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
	REAL();
	struct psock *p = offloaded(fd);
	if (!p) {
		int passed = 0;
		if (g.attached > 0 && msg && msg->msg_controllen > 0)
			each_passed_fd(msg, count_offloaded, &passed);
		if (!passed)
			return real.sendmsg(fd, msg, flags);
		struct ucred peer;
		socklen_t plen = sizeof(peer);
		if (msg->msg_name || real.getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &plen) != 0 ||
		    !in_region(peer.pid)) {
			warnx_once("pno: an offloaded socket can be passed (SCM_RIGHTS) only to a "
				   "process of the same application: sendmsg refused with EOPNOTSUPP\n");
			return fail(EOPNOTSUPP);
		}
		each_passed_fd(msg, hold_in_flight, NULL);
		ssize_t r = real.sendmsg(fd, msg, flags);
		if (r < 0) {
			int e = errno;
			each_passed_fd(msg, drop_in_flight, NULL);
			errno = e;
		}
		return r;
	}
	return ret(pno_send(p, msg->msg_iov, (int)msg->msg_iovlen, flags));
}

/* sendfile to an offloaded socket: read from the file, write into the TX ring. */
EXPORT ssize_t sendfile(int out, int in, off_t *offset, size_t count)
{
	REAL();
	struct psock *p = offloaded(out);
	if (!p)
		return real.sendfile(out, in, offset, count);
	char buf[65536];
	size_t done = 0;
	off_t pos = offset ? *offset : 0;
	while (done < count) {
		size_t chunk = count - done < sizeof(buf) ? count - done : sizeof(buf);
		ssize_t n = offset ? pread(in, buf, chunk, pos) : real.read(in, buf, chunk);
		if (n < 0) {
			if (done)
				break;
			return -1;
		}
		if (n == 0)
			break;
		struct iovec iov = { buf, (size_t)n };
		ssize_t w = pno_send(p, &iov, 1, MSG_NOSIGNAL);
		if (w < 0) {
			if (!offset && n > 0)
				lseek(in, -n, SEEK_CUR);
			if (done)
				break;
			if (w == -EPIPE && !(0))
				raise(SIGPIPE);
			errno = (int)-w;
			return -1;
		}
		if (w < n && !offset)
			lseek(in, w - n, SEEK_CUR);
		done += (size_t)w;
		pos += w;
		if (w < n)
			break;
	}
	if (offset)
		*offset = pos;
	return (ssize_t)done;
}

EXPORT ssize_t sendfile64(int out, int in, off_t *offset, size_t count)
{
	return sendfile(out, in, offset, count);
}

/*
 * splice() with an offloaded socket on either end: the bytes go through a buffer (the kernel
 * has no pipe into the region). Returns what one pass moved, as splice does.
 */
EXPORT ssize_t splice(int in, loff_t *off_in, int out, loff_t *off_out, size_t len,
		      unsigned int flags)
{
	REAL();
	struct psock *pin = offloaded(in), *pout = offloaded(out);
	if (!pin && !pout)
		return real.splice(in, off_in, out, off_out, len, flags);
	char buf[65536];
	size_t chunk = len < sizeof(buf) ? len : sizeof(buf);
	int nb = (flags & SPLICE_F_NONBLOCK) ? MSG_DONTWAIT : 0;
	ssize_t n;
	if (pin) {
		struct iovec iov = { buf, chunk };
		n = ret(pno_recv(pin, &iov, 1, nb));
		if (n <= 0)
			return n;
		ssize_t w = off_out ? pwrite(out, buf, (size_t)n, *off_out) : real.write(out, buf, (size_t)n);
		if (w > 0 && off_out)
			*off_out += w;
		return w;
	}
	n = off_in ? pread(in, buf, chunk, *off_in) : real.read(in, buf, chunk);
	if (n <= 0)
		return n;
	struct iovec iov = { buf, (size_t)n };
	ssize_t w = ret(pno_send(pout, &iov, 1, nb | MSG_NOSIGNAL));
	if (w > 0 && off_in)
		*off_in += w;
	return w;
}

/* An fd of ours is going away (close, or dup2 onto it). Caller holds g.mu. */
static void drop_fd_locked(int fd)
{
	struct psock *p = g.files[fd];
	if (!p)
		return;
	__atomic_store_n(&g.files[fd], NULL, __ATOMIC_RELEASE);
	if (p->kind == P_OFFLOADED) {
		__atomic_sub_fetch(&proc_refs()[p->slot], 1, __ATOMIC_SEQ_CST);
		if (p->fdrefs == 1) {
			struct pno_sock *s = line(p->slot);
			if (__atomic_load_n(&s->gen, __ATOMIC_ACQUIRE) == p->gen &&
			    __atomic_sub_fetch(&s->holders, 1, __ATOMIC_SEQ_CST) == 0)
				post_simple(p, PNO_CMD_CLOSE, p->linger, 0, 0, 0);
		}
	}
	if (--p->fdrefs > 0)
		return;
	/* Out of every epoll set (Linux drops the items when the file goes). */
	while (p->epis) {
		struct epi *e = p->epis;
		struct pep *ep = e->ep;
		pthread_mutex_lock(&ep->mu);
		p->epis = e->sock_next;
		if (ep->byfd && ep->byfd[e->fd] == e)
			ep->byfd[e->fd] = NULL;
		if (p->kind == P_OFFLOADED && ep->byslot) {
			struct epi **pp = &ep->byslot[p->slot];
			while (*pp && *pp != e)
				pp = &(*pp)->slot_next;
			if (*pp)
				*pp = e->slot_next;
		}
		if (e->in_ready) {
			e->ready_prev->ready_next = e->ready_next;
			e->ready_next->ready_prev = e->ready_prev;
		}
		pthread_mutex_unlock(&ep->mu);
		free(e);
	}
	free(p);
}

static void close_epoll_locked(int fd);

EXPORT int close(int fd)
{
	REAL();
	if (fd >= 0 && fd < MAX_FDS && g.internal[fd])
		return fail(EBADF); /* ours, not the application's: as if it were not open */
	if (ours(fd) || epoll_of(fd)) {
		pthread_mutex_lock(&g.mu);
		drop_fd_locked(fd);
		close_epoll_locked(fd);
		pthread_mutex_unlock(&g.mu);
	}
	return real.close(fd);
}

EXPORT int shutdown(int fd, int how)
{
	REAL();
	struct psock *p = offloaded(fd);
	if (!p)
		return real.shutdown(fd, how);
	if (how < SHUT_RD || how > SHUT_RDWR)
		return fail(EINVAL);
	struct pno_sock *s = line(p->slot);
	if (__atomic_load_n(&s->kind, __ATOMIC_ACQUIRE) != PNO_KIND_CONN)
		return fail(ENOTCONN);
	/* Linux's inet_shutdown: a connection that is over (the user socket is TCP_CLOSE once
	 * the engine is in TIME-WAIT or closed) says ENOTCONN, after taking the flags. */
	uint32_t st = __atomic_load_n(&s->tcp_state, __ATOMIC_ACQUIRE);
	if (st == 0 /* CLOSED */ || st == 10 /* TIME-WAIT */) {
		if (how != SHUT_WR)
			__atomic_or_fetch(&s->host_shut, PNO_SHUT_RCV, __ATOMIC_SEQ_CST);
		return fail(ENOTCONN);
	}
	if (how != SHUT_WR)
		__atomic_or_fetch(&s->host_shut, PNO_SHUT_RCV, __ATOMIC_SEQ_CST);
	if (how != SHUT_RD)
		post_simple(p, PNO_CMD_SHUTDOWN, SHUT_WR, 0, 0, 0);
	return 0;
}

static int put_addr(struct sockaddr *addr, socklen_t *len, uint32_t ip, uint16_t port)
{
	if (!addr || !len)
		return fail(EFAULT);
	struct sockaddr_in in = { .sin_family = AF_INET, .sin_port = htons(port),
				  .sin_addr.s_addr = htonl(ip) };
	memcpy(addr, &in, *len < sizeof(in) ? *len : sizeof(in));
	*len = sizeof(in);
	return 0;
}

EXPORT int getsockname(int fd, struct sockaddr *addr, socklen_t *len)
{
	REAL();
	struct psock *p = offloaded(fd);
	if (!p)
		return real.getsockname(fd, addr, len);
	struct pno_sock *s = line(p->slot);
	return put_addr(addr, len, __atomic_load_n(&s->local_ip, __ATOMIC_ACQUIRE),
			__atomic_load_n(&s->local_port, __ATOMIC_ACQUIRE));
}

EXPORT int getpeername(int fd, struct sockaddr *addr, socklen_t *len)
{
	REAL();
	struct psock *p = offloaded(fd);
	if (!p)
		return real.getpeername(fd, addr, len);
	struct pno_sock *s = line(p->slot);
	if (__atomic_load_n(&s->kind, __ATOMIC_ACQUIRE) != PNO_KIND_CONN || connect_state(p) <= 0)
		return fail(ENOTCONN);
	return put_addr(addr, len, __atomic_load_n(&s->peer_ip, __ATOMIC_ACQUIRE),
			__atomic_load_n(&s->peer_port, __ATOMIC_ACQUIRE));
}

static int put_int(void *val, socklen_t *len, int v)
{
	if (!val || !len)
		return fail(EFAULT);
	if (*len < sizeof(int))
		return fail(EINVAL);
	memcpy(val, &v, sizeof(int));
	*len = sizeof(int);
	return 0;
}

static int tcp_info(struct psock *p, void *val, socklen_t *len)
{
	struct tcp_info info;
	memset(&info, 0, sizeof(info));
	struct thr *t = thread_state();
	if (!t)
		return fail(ENOBUFS);
	uint8_t *d = cmd_begin(t, PNO_CMD_TCP_INFO, p->slot, p->gen);
	if (!d)
		return fail(EIO);
	uint8_t out[PNO_DESC_SIZE];
	int r = cmd_call(t, d, out);
	if (r < 0)
		return fail(-r);
	const struct pno_cpl_tcp_info *c = (const struct pno_cpl_tcp_info *)out;
	info.tcpi_state = (uint8_t)c->state;
	info.tcpi_rto = c->rto_us;
	info.tcpi_rtt = c->rtt_us;
	info.tcpi_rttvar = c->rttvar_us;
	info.tcpi_snd_mss = c->snd_mss;
	info.tcpi_rcv_mss = c->rcv_mss;
	info.tcpi_snd_cwnd = c->snd_cwnd;
	info.tcpi_snd_ssthresh = c->snd_ssthresh;
	info.tcpi_total_retrans = c->total_retrans;
	info.tcpi_unacked = c->unacked;
	socklen_t n = *len < sizeof(info) ? *len : sizeof(info);
	memcpy(val, &info, n);
	*len = n;
	return 0;
}

EXPORT int getsockopt(int fd, int level, int name, void *val, socklen_t *len)
{
	REAL();
	struct psock *p = ours(fd);
	if (!p)
		return real.getsockopt(fd, level, name, val, len);
	if (level == SOL_SOCKET && name == SO_ERROR && p->kind == P_OFFLOADED)
		return put_int(val, len, take_error(line(p->slot)));
	if (level == IPPROTO_TCP && name == TCP_INFO && p->kind == P_OFFLOADED)
		return tcp_info(p, val, len);
	if (level == SOL_SOCKET && name == SO_ACCEPTCONN && p->kind == P_OFFLOADED)
		return put_int(val, len, p->listening);
	/* Set on the bridge only (see setsockopt). */
	if (level == IPPROTO_TCP && name == TCP_NODELAY && p->kind == P_OFFLOADED)
		return put_int(val, len, p->nodelay);
	if (level == IPPROTO_TCP && name == TCP_CORK && p->kind == P_OFFLOADED)
		return put_int(val, len, p->cork);
	if (p->kind == P_OFFLOADED && p->inherited) {
		/* An accepted socket's placeholder is a fresh socket: the options it inherited
		 * from its listener (as Linux's accepted sockets do) are answered from the record. */
		if (level == SOL_SOCKET && name == SO_KEEPALIVE)
			return put_int(val, len, p->keepalive);
		if (level == SOL_SOCKET && name == SO_REUSEADDR)
			return put_int(val, len, p->reuseaddr);
		if (level == IPPROTO_TCP && name == TCP_KEEPIDLE)
			return put_int(val, len, p->keepidle ? p->keepidle : 7200);
		if (level == IPPROTO_TCP && name == TCP_KEEPINTVL)
			return put_int(val, len, p->keepintvl ? p->keepintvl : 75);
		if (level == IPPROTO_TCP && name == TCP_KEEPCNT)
			return put_int(val, len, p->keepcnt ? p->keepcnt : 9);
	}
	/* Everything else was also set on the placeholder: the kernel answers as it would. */
	return real.getsockopt(fd, level, name, val, len);
}

EXPORT int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
	REAL();
	struct psock *p = ours(fd);
	/*
	 * TCP_NODELAY and TCP_CORK of an offloaded socket concern only the bridge, and nginx
	 * toggles TCP_CORK around every response (tcp_nopush): they are answered here, with the
	 * kernel's checks, and not set on the placeholder (two system calls per request saved).
	 */
	int bridge_only = p && p->kind == P_OFFLOADED && level == IPPROTO_TCP &&
			  (name == TCP_NODELAY || name == TCP_CORK);
	if (bridge_only && len < sizeof(int))
		return fail(EINVAL);
	if (bridge_only && !val)
		return fail(EFAULT);
	int r = bridge_only ? 0 : real.setsockopt(fd, level, name, val, len);
	if (!p || r != 0)
		return r;
	int v = 0;
	if (val && len >= sizeof(int))
		memcpy(&v, val, sizeof(int));
	int fwd = 0, v2 = 0;
	if (level == SOL_SOCKET) {
		switch (name) {
		case SO_REUSEADDR: p->reuseaddr = v != 0; break;
		case SO_REUSEPORT: p->reuseport = v != 0; break;
		case SO_KEEPALIVE: p->keepalive = v != 0; fwd = 1; break;
		case SO_LINGER: {
			struct linger l = { 0, 0 };
			if (val && len >= sizeof(l))
				memcpy(&l, val, sizeof(l));
			p->linger = l.l_onoff ? l.l_linger : -1;
			v = l.l_onoff;
			v2 = l.l_linger;
			fwd = 1;
			break;
		}
		case SO_RCVTIMEO:
		case SO_SNDTIMEO: {
			struct timeval tv = { 0, 0 };
			if (val && len >= sizeof(tv))
				memcpy(&tv, val, sizeof(tv));
			int ms = (int)(tv.tv_sec * 1000 + tv.tv_usec / 1000);
			if (name == SO_RCVTIMEO)
				p->rcvtimeo_ms = ms;
			else
				p->sndtimeo_ms = ms;
			break;
		}
		}
	} else if (level == IPPROTO_TCP) {
		switch (name) {
		case TCP_NODELAY: p->nodelay = v != 0; fwd = 1; break;
		case TCP_CORK: p->cork = v != 0; fwd = 1; break;
		case TCP_KEEPIDLE: p->keepidle = v; fwd = 1; break;
		case TCP_KEEPINTVL: p->keepintvl = v; fwd = 1; break;
		case TCP_KEEPCNT: p->keepcnt = v; fwd = 1; break;
		}
	}
	if (fwd && p->kind == P_OFFLOADED)
		forward_opt(p, level, name, v, v2);
	return 0;
}

EXPORT int fcntl(int fd, int cmd, ...)
{
	REAL();
	va_list ap;
	va_start(ap, cmd);
	long arg = va_arg(ap, long);
	va_end(ap);
	int r = real.fcntl(fd, cmd, arg);
	struct psock *p = ours(fd);
	if (r < 0 || !p)
		return r;
	if (cmd == F_SETFL)
		p->nonblock = (arg & O_NONBLOCK) != 0;
	if ((cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC) && r < MAX_FDS) {
		pthread_mutex_lock(&g.mu);
		if (g.files[fd] == p) {
			p->fdrefs++;
			if (p->kind == P_OFFLOADED)
				__atomic_add_fetch(&proc_refs()[p->slot], 1, __ATOMIC_SEQ_CST);
			register_fd(r, p);
		}
		pthread_mutex_unlock(&g.mu);
	}
	return r;
}

EXPORT int fcntl64(int fd, int cmd, ...) __attribute__((alias("fcntl")));

EXPORT int ioctl(int fd, unsigned long req, ...)
{
	REAL();
	va_list ap;
	va_start(ap, req);
	void *arg = va_arg(ap, void *);
	va_end(ap);
	struct psock *p = offloaded(fd);
	if (p && (req == FIONREAD || req == TIOCOUTQ)) {
		if (!arg)
			return fail(EFAULT);
		int v = req == FIONREAD ? (int)ring_used(rx_ctrl(p->slot), g.hdr->rx_bytes)
					: (int)ring_used(tx_ctrl(p->slot), g.hdr->tx_bytes);
		if (req == FIONREAD && __atomic_load_n(&line(p->slot)->kind, __ATOMIC_ACQUIRE) ==
						   PNO_KIND_LISTENER)
			return fail(EINVAL);
		memcpy(arg, &v, sizeof(v));
		return 0;
	}
	int r = real.ioctl(fd, req, arg);
	p = ours(fd);
	if (r == 0 && p && req == FIONBIO && arg)
		p->nonblock = *(int *)arg != 0;
	return r;
}

/* newfd now refers to what oldfd refers to. */
static void dup_into(int oldfd, int newfd)
{
	if (newfd < 0 || newfd >= MAX_FDS)
		return;
	pthread_mutex_lock(&g.mu);
	struct psock *p = oldfd >= 0 && oldfd < MAX_FDS ? g.files[oldfd] : NULL;
	if (p) {
		p->fdrefs++;
		if (p->kind == P_OFFLOADED)
			__atomic_add_fetch(&proc_refs()[p->slot], 1, __ATOMIC_SEQ_CST);
		register_fd(newfd, p);
	}
	pthread_mutex_unlock(&g.mu);
}

EXPORT int dup(int fd)
{
	REAL();
	int r = real.dup(fd);
	if (r >= 0 && ours(fd))
		dup_into(fd, r);
	return r;
}

static int dup3_common(int oldfd, int newfd, int flags, int is_dup2)
{
	if (newfd >= 0 && newfd < MAX_FDS && g.internal[newfd])
		return fail(EBADF);
	if (oldfd == newfd)
		return is_dup2 ? real.dup2(oldfd, newfd) : fail(EINVAL);
	if (ours(newfd) || epoll_of(newfd)) {
		pthread_mutex_lock(&g.mu);
		drop_fd_locked(newfd);
		close_epoll_locked(newfd);
		pthread_mutex_unlock(&g.mu);
	}
	int r = is_dup2 ? real.dup2(oldfd, newfd) : real.dup3(oldfd, newfd, flags);
	if (r >= 0 && ours(oldfd))
		dup_into(oldfd, r);
	return r;
}

EXPORT int dup2(int oldfd, int newfd)
{
	REAL();
	return dup3_common(oldfd, newfd, 0, 1);
}

EXPORT int dup3(int oldfd, int newfd, int flags)
{
	REAL();
	return dup3_common(oldfd, newfd, flags, 0);
}

/* ---- epoll ------------------------------------------------------------------------------ */

static void new_epoll(int fd)
{
	if (fd < 0 || fd >= MAX_FDS)
		return;
	struct pep *ep = calloc(1, sizeof(*ep));
	if (!ep)
		return;
	ep->kfd = fd;
	ep->waiter = -1;
	ep->wake_rd = -1;
	ep->wake_wr = -1;
	ep->ready.ready_next = ep->ready.ready_prev = &ep->ready;
	pthread_mutex_init(&ep->mu, NULL);
	__atomic_store_n(&g.eps[fd], ep, __ATOMIC_RELEASE);
}

static void close_epoll_locked(int fd)
{
	struct pep *ep = fd >= 0 && fd < MAX_FDS ? g.eps[fd] : NULL;
	if (!ep)
		return;
	__atomic_store_n(&g.eps[fd], NULL, __ATOMIC_RELEASE);
	pthread_mutex_lock(&ep->mu);
	if (ep->byfd) {
		for (int i = 0; i < MAX_FDS; i++) {
			struct epi *e = ep->byfd[i];
			if (!e)
				continue;
			struct epi **pp = &e->p->epis;
			while (*pp && *pp != e)
				pp = &(*pp)->sock_next;
			if (*pp)
				*pp = e->sock_next;
			if (e->p->kind == P_OFFLOADED && ep->waiter >= 0 && ep->owner == mypid())
				subscribe(e->p, ep->waiter, ep->wgen, 0, 0);
			free(e);
		}
	}
	if (ep->waiter >= 0 && ep->owner == mypid()) {
		release_waiter(ep->waiter, ep->wgen);
		g.internal[ep->wake_rd] = 0;
		real.close(ep->wake_rd);
		g.internal[ep->wake_wr] = 0;
		real.close(ep->wake_wr);
	}
	pthread_mutex_unlock(&ep->mu);
	free(ep->byfd);
	free(ep->byslot);
	free(ep);
}

EXPORT int epoll_create(int size)
{
	REAL();
	int fd = real.epoll_create(size);
	if (fd >= 0)
		new_epoll(fd);
	return fd;
}

EXPORT int epoll_create1(int flags)
{
	REAL();
	int fd = real.epoll_create1(flags);
	if (fd >= 0)
		new_epoll(fd);
	return fd;
}

static void ready_add(struct pep *ep, struct epi *e)
{
	if (e->in_ready || e->disabled)
		return;
	e->in_ready = 1;
	e->ready_prev = ep->ready.ready_prev;
	e->ready_next = &ep->ready;
	ep->ready.ready_prev->ready_next = e;
	ep->ready.ready_prev = e;
}

static void ready_del(struct epi *e)
{
	if (!e->in_ready)
		return;
	e->in_ready = 0;
	e->ready_prev->ready_next = e->ready_next;
	e->ready_next->ready_prev = e->ready_prev;
}


/*
 * Makes sure the epoll instance has a waiter of this process: claimed on first use, and
 * claimed anew in a forked child, whose parent's waiter is not its own (its subscriptions are
 * re-made). Caller holds ep->mu. 0, or -1.
 */
static int ep_waiter(struct pep *ep)
{
	if (ep->waiter >= 0 && ep->owner == mypid())
		return 0;
	if (!ep->byfd) {
		ep->byfd = calloc(MAX_FDS, sizeof(*ep->byfd));
		ep->byslot = calloc(g.hdr->max_sockets, sizeof(*ep->byslot));
		if (!ep->byfd || !ep->byslot)
			return -1;
	}
	if (ep->waiter >= 0) {
		/* A forked child's copy of its parent's set: the wake fds are the parent's. */
		real.epoll_ctl(ep->kfd, EPOLL_CTL_DEL, ep->wake_rd, NULL);
		real.close(ep->wake_rd);
		real.close(ep->wake_wr);
	}
	if (claim_waiter(&ep->waiter, &ep->wgen, &ep->wake_rd, &ep->ev, 0, &ep->wake_wr) != 0)
		return -1;
	ep->owner = mypid();
	struct epoll_event wev = { .events = EPOLLIN, .data.u64 = WAKE_MAGIC };
	real.epoll_ctl(ep->kfd, EPOLL_CTL_ADD, ep->wake_rd, &wev);
	/* The control socket hangs up when the bridge goes: the set wakes then too. */
	struct epoll_event cev = { .events = EPOLLRDHUP, .data.u64 = WAKE_MAGIC + 1 };
	real.epoll_ctl(ep->kfd, EPOLL_CTL_ADD, g.ctl_fd, &cev);
	for (int i = 0; i < MAX_FDS; i++) {
		struct epi *e = ep->byfd[i];
		if (e && e->p->kind == P_OFFLOADED)
			subscribe_item(ep, e);
	}
	nested_rearm(ep);
	return 0;
}

EXPORT int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
	REAL();
	struct pep *ep = epoll_of(epfd);
	struct psock *p = ours(fd);
	struct pep *inner = epoll_of(fd);
	if (inner && ep && inner != ep) {
		/* An epoll set inside another: readable exactly while it has ready items. */
		pthread_mutex_lock(&inner->mu);
		inner->nested = 1;
		nested_rearm(inner);
		pthread_mutex_unlock(&inner->mu);
		pthread_mutex_lock(&ep->mu);
		int at = -1;
		for (int i = 0; i < ep->n_inner; i++)
			if (ep->inner[i] == fd)
				at = i;
		if (op == EPOLL_CTL_DEL && at >= 0)
			ep->inner[at] = ep->inner[--ep->n_inner];
		else if (op == EPOLL_CTL_ADD && at < 0 && ep->n_inner < 8)
			ep->inner[ep->n_inner++] = fd;
		pthread_mutex_unlock(&ep->mu);
	}
	if (!ep || !p)
		return real.epoll_ctl(epfd, op, fd, ev);
	if (fd == epfd)
		return fail(EINVAL);
	if (op != EPOLL_CTL_DEL && !ev)
		return fail(EFAULT);
	if (g.attached <= 0 && p->kind == P_PENDING && !attach())
		return real.epoll_ctl(epfd, op, fd, ev);
	if (p->kind == P_OFFLOADED && p->loop_listening) {
		/* Its loopback clients arrive on the placeholder: the kernel set watches it too. */
		int kr = real.epoll_ctl(epfd, op, fd, ev);
		if (kr < 0 && op == EPOLL_CTL_ADD)
			return kr;
	}
	pthread_mutex_lock(&g.mu); /* the socket's epoll list */
	pthread_mutex_lock(&ep->mu);
	int rc = 0;
	if (ep_waiter(ep) != 0) {
		rc = fail(ENOMEM);
		goto out;
	}
	struct epi *e = ep->byfd[fd];
	if (e && e->p != p) {
		/* The fd number was reused for another socket: the old item is stale. */
		e = NULL;
	}
	switch (op) {
	case EPOLL_CTL_ADD:
		if (e) {
			rc = fail(EEXIST);
			goto out;
		}
		e = calloc(1, sizeof(*e));
		if (!e) {
			rc = fail(ENOMEM);
			goto out;
		}
		e->fd = fd;
		e->p = p;
		e->ep = ep;
		e->events = ev->events;
		e->data = ev->data;
		ep->byfd[fd] = e;
		e->sock_next = p->epis;
		p->epis = e;
		if (p->kind == P_OFFLOADED) {
			e->slot_next = ep->byslot[p->slot];
			ep->byslot[p->slot] = e;
			subscribe_item(ep, e);
		}
		if (sock_poll(p) & (e->events | EPOLLERR | EPOLLHUP))
			ready_add(ep, e);
		break;
	case EPOLL_CTL_MOD:
		if (!e) {
			rc = fail(ENOENT);
			goto out;
		}
		if ((ev->events & EPOLLEXCLUSIVE) || (e->events & EPOLLEXCLUSIVE)) {
			rc = fail(EINVAL);
			goto out;
		}
		e->events = ev->events;
		e->data = ev->data;
		e->disabled = 0;
		if (p->kind == P_OFFLOADED)
			subscribe_item(ep, e);
		if (sock_poll(p) & (e->events | EPOLLERR | EPOLLHUP))
			ready_add(ep, e);
		break;
	case EPOLL_CTL_DEL: {
		if (!e) {
			rc = fail(ENOENT);
			goto out;
		}
		ready_del(e);
		ep->byfd[fd] = NULL;
		struct epi **pp = &p->epis;
		while (*pp && *pp != e)
			pp = &(*pp)->sock_next;
		if (*pp)
			*pp = e->sock_next;
		if (p->kind == P_OFFLOADED) {
			pp = &ep->byslot[p->slot];
			while (*pp && *pp != e)
				pp = &(*pp)->slot_next;
			if (*pp)
				*pp = e->slot_next;
			subscribe(p, ep->waiter, ep->wgen, 0, 0);
		}
		free(e);
		break;
	}
	default:
		rc = fail(EINVAL);
	}
out:
	pthread_mutex_unlock(&ep->mu);
	pthread_mutex_unlock(&g.mu);
	return rc;
}

static void ep_drain(struct pep *ep);

/*
 * A set that is itself in another set (or polled) must make its fd readable exactly while it
 * has ready items, as Linux's ep_eventpoll_poll does: its wake socket holds a byte then, and
 * its waiter is always woken. Caller holds ep->mu.
 */
static void nested_rearm(struct pep *ep)
{
	if (!ep->nested || ep->waiter < 0 || ep->owner != mypid())
		return;
	drain_wake(ep->wake_rd);
	__atomic_store_n(&pno_region_waiter(g.base, (uint32_t)ep->waiter)->sleeping, 1,
			 __ATOMIC_SEQ_CST);
	ep_drain(ep);
	int ready = 0;
	for (struct epi *e = ep->ready.ready_next; e != &ep->ready && !ready; e = e->ready_next)
		ready = (sock_poll(e->p) & (e->events | EPOLLERR | EPOLLHUP)) != 0 && !e->disabled;
	if (ready) {
		char byte = 1;
		real.sendto(ep->wake_wr, &byte, 1, MSG_DONTWAIT, NULL, 0);
	}
}

/* Moves notified items to the ready list. Caller holds ep->mu. */
static void ep_drain(struct pep *ep)
{
	struct pno_waiter_line *wl = pno_region_waiter(g.base, (uint32_t)ep->waiter);
	for (;;) {
		int64_t n = pno_dring_peek(&ep->ev, 64);
		if (n <= 0)
			break;
		for (int64_t i = 0; i < n; i++) {
			const struct pno_ev_notify *ev = pno_dring_cons_slot(&ep->ev, (uint32_t)i);
			uint32_t slot = ev->hdr.sock, gen = ev->hdr.gen;
			if (slot >= g.hdr->max_sockets)
				continue;
			for (struct epi *e = ep->byslot[slot]; e; e = e->slot_next)
				if (e->p->gen == gen)
					ready_add(ep, e);
		}
		pno_dring_release(&ep->ev, (uint32_t)n);
	}
	if (__atomic_exchange_n(&wl->overflow, 0, __ATOMIC_SEQ_CST)) {
		for (int i = 0; i < MAX_FDS; i++)
			if (ep->byfd[i])
				ready_add(ep, ep->byfd[i]);
	}
}

/* A fingerprint of everything whose change is an edge: RX produced, TX consumed, flags. */
static uint64_t edge_state(struct psock *p)
{
	if (p->kind != P_OFFLOADED)
		return 1;
	struct pno_sock *s = line(p->slot);
	uint32_t rx = __atomic_load_n(&rx_ctrl(p->slot)->prod, __ATOMIC_ACQUIRE);
	uint32_t tx = __atomic_load_n(&tx_ctrl(p->slot)->cons, __ATOMIC_ACQUIRE);
	uint32_t flags = __atomic_load_n(&s->shutdown, __ATOMIC_ACQUIRE) * 0x9e3779b1u ^
			 __atomic_load_n(&s->err_seq, __ATOMIC_ACQUIRE) * 0x85ebca6bu ^
			 __atomic_load_n(&s->tcp_state, __ATOMIC_ACQUIRE);
	return ((uint64_t)rx << 32 | tx) ^ ((uint64_t)flags << 17) ^ 2 ^
	       ((uint64_t)__atomic_load_n(&g.bridge_dead, __ATOMIC_ACQUIRE) << 63);
}

/* Reports ready items into out[0..max), as ep_send_events does. Caller holds ep->mu. */
static int ep_collect(struct pep *ep, struct epoll_event *out, int max)
{
	int n = 0;
	struct epi *stop = ep->ready.ready_prev; /* LT items go back to the tail: one pass */
	struct epi *e = ep->ready.ready_next;
	while (e != &ep->ready && n < max) {
		struct epi *next = e->ready_next;
		int last = e == stop;
		uint32_t m = sock_poll(e->p) & (e->events | EPOLLERR | EPOLLHUP);
		ready_del(e);
		if (m && (e->events & EPOLLET)) {
			uint64_t now = edge_state(e->p);
			if (now == e->et_seen)
				m = 0; /* no new edge since the last report */
			else
				e->et_seen = now;
		}
		if (m && !e->disabled) {
			out[n].events = m;
			out[n].data = e->data;
			n++;
			if (e->events & EPOLLONESHOT)
				e->disabled = 1;
			else if (!(e->events & EPOLLET))
				ready_add(ep, e);
		}
		if (last)
			break;
		e = next;
	}
	return n;
}

/* Drops the wake socket's entries from kernel results; returns how many remain. */
static int strip_wake(struct pep *ep, struct epoll_event *evs, int n)
{
	int k = 0;
	for (int i = 0; i < n; i++) {
		if (evs[i].data.u64 == WAKE_MAGIC) {
			take_wake(ep->wake_rd); /* a nested set re-arms itself on the way out */
			continue;
		}
		if (evs[i].data.u64 == WAKE_MAGIC + 1) {
			/* The bridge hung up: every item reads as reset from now on. */
			bridge_gone();
			real.epoll_ctl(ep->kfd, EPOLL_CTL_DEL, g.ctl_fd, NULL);
			for (int f = 0; f < MAX_FDS; f++)
				if (ep->byfd && ep->byfd[f])
					ready_add(ep, ep->byfd[f]);
			continue;
		}
		evs[k++] = evs[i];
	}
	return k;
}

static int pno_epoll_wait_locked(struct pep *ep, struct epoll_event *evs, int max, int timeout,
				 const sigset_t *mask);

static int pno_epoll_wait(struct pep *ep, struct epoll_event *evs, int max, int timeout,
			  const sigset_t *mask)
{
	if (max <= 0)
		return fail(EINVAL);
	/* Nested sets say now whether they have ready items (Linux asks them at wait time). */
	for (int i = 0; i < ep->n_inner; i++) {
		struct pep *in = epoll_of(ep->inner[i]);
		if (!in || in == ep)
			continue;
		pthread_mutex_lock(&in->mu);
		nested_rearm(in);
		pthread_mutex_unlock(&in->mu);
	}
	pthread_mutex_lock(&ep->mu);
	int r = pno_epoll_wait_locked(ep, evs, max, timeout, mask);
	int saved = errno;
	nested_rearm(ep);
	pthread_mutex_unlock(&ep->mu);
	errno = saved;
	return r;
}

/* epoll_wait with ep->mu held on entry and on return (dropped while sleeping). */
static int pno_epoll_wait_locked(struct pep *ep, struct epoll_event *evs, int max, int timeout,
				 const sigset_t *mask)
{
	if (ep->waiter < 0 || ep->owner != mypid()) {
		if (!ep->byfd) {
			/* No socket of ours was ever in the set: it is the kernel's alone. */
			pthread_mutex_unlock(&ep->mu);
			int r = real.epoll_pwait(ep->kfd, evs, max, timeout, mask);
			int saved = errno;
			pthread_mutex_lock(&ep->mu);
			errno = saved;
			return r;
		}
		if (ep_waiter(ep) != 0)
			return fail(ENOMEM);
	}
	uint64_t deadline = timeout > 0 ? now_ns() + (uint64_t)timeout * 1000000 : 0;
	struct pno_waiter_line *wl = pno_region_waiter(g.base, (uint32_t)ep->waiter);
	for (;;) {
		ep_drain(ep);
		/* Kernel fds are never delayed behind ours: both are looked at on every call, and
		 * they take turns at the head, as one ready list would rotate. */
		int n = 0;
		ep->kernel_first = !ep->kernel_first;
		if (ep->kernel_first) {
			int k = real.epoll_pwait(ep->kfd, evs, max, 0, NULL);
			if (k > 0)
				n = strip_wake(ep, evs, k);
		}
		if (n < max)
			n += ep_collect(ep, evs + n, max - n);
		if (!ep->kernel_first && n < max) {
			int k = real.epoll_pwait(ep->kfd, evs + n, max - n, 0, NULL);
			if (k > 0)
				n += strip_wake(ep, evs + n, k);
		}
		if (n > 0 || timeout == 0)
			return n;
		int left = -1;
		if (deadline) {
			uint64_t now = now_ns();
			if (now >= deadline)
				return 0;
			left = (int)((deadline - now + 999999) / 1000000);
		}
		/* A busy server's next request is usually microseconds away: look for it a little
		 * while before paying for a sleep and a wakeup (Onload's spin, Linux's busy_poll). */
		if (g.spin_ns) {
			uint64_t until = now_ns() + g.spin_ns;
			while (ep->ready.ready_next == &ep->ready && now_ns() < until) {
				for (int i = 0; i < 64; i++)
					__builtin_ia32_pause();
				ep_drain(ep);
			}
			if (ep->ready.ready_next != &ep->ready)
				continue;
		}
		__atomic_store_n(&wl->sleeping, 1, __ATOMIC_SEQ_CST);
		ep_drain(ep);
		if (ep->ready.ready_next != &ep->ready) {
			if (!ep->nested)
				__atomic_store_n(&wl->sleeping, 0, __ATOMIC_RELEASE);
			continue;
		}
		/* Other threads may use the set while we sleep in the kernel. */
		pthread_mutex_unlock(&ep->mu);
		int k = real.epoll_pwait(ep->kfd, evs, max, left, mask);
		int saved = errno;
		pthread_mutex_lock(&ep->mu);
		if (!ep->nested)
			__atomic_store_n(&wl->sleeping, 0, __ATOMIC_RELEASE);
		if (k < 0) {
			errno = saved;
			return -1;
		}
		k = strip_wake(ep, evs, k);
		if (k > 0) {
			if (k < max) {
				ep_drain(ep);
				k += ep_collect(ep, evs + k, max - k);
			}
			return k;
		}
	}
}

EXPORT int epoll_pwait(int epfd, struct epoll_event *evs, int max, int timeout,
		       const sigset_t *mask)
{
	REAL();
	struct pep *ep = epoll_of(epfd);
	if (!ep || g.attached <= 0)
		return real.epoll_pwait(epfd, evs, max, timeout, mask);
	return pno_epoll_wait(ep, evs, max, timeout, mask);
}

EXPORT int epoll_wait(int epfd, struct epoll_event *evs, int max, int timeout)
{
	return epoll_pwait(epfd, evs, max, timeout, NULL);
}

EXPORT int epoll_pwait2(int epfd, struct epoll_event *evs, int max, const struct timespec *ts,
			const sigset_t *mask)
{
	int timeout = -1;
	if (ts) {
		int64_t ms = (int64_t)ts->tv_sec * 1000 + (ts->tv_nsec + 999999) / 1000000;
		timeout = ms > 0x7fffffff ? 0x7fffffff : (int)ms;
	}
	return epoll_pwait(epfd, evs, max, timeout, mask);
}

/* ---- poll and select -------------------------------------------------------------------- */

static short to_poll(uint32_t m, short want)
{
	short r = 0;
	if (m & EPOLLIN)
		r |= POLLIN | POLLRDNORM;
	if (m & EPOLLOUT)
		r |= POLLOUT | POLLWRNORM;
	if (m & EPOLLRDHUP)
		r |= POLLRDHUP;
	r &= want;
	if (m & EPOLLERR)
		r |= POLLERR;
	if (m & EPOLLHUP)
		r |= POLLHUP;
	return r;
}

struct poll_ctx {
	struct pollfd *fds;
	nfds_t n;
};

/*
 * A call that has seen an offloaded socket ready puts the socket's epoll items on their ready
 * lists. The bridge makes received data visible in the RX ring while it works through a burst
 * and posts the socket's event at the end of the round; without this, epoll_wait would not
 * list a socket that poll() has just said is readable until that event lands. In the kernel
 * the wakeup callback runs right after the data is queued, so the window is nanoseconds.
 * The event still arrives and finds the items there already (ready_add is idempotent).
 */
static void note_ready(struct psock *p, uint32_t m)
{
	if (!m || !__atomic_load_n(&p->epis, __ATOMIC_ACQUIRE))
		return;
	pthread_mutex_lock(&g.mu); /* the socket's epoll list, taken before a set's as epoll_ctl */
	for (struct epi *e = p->epis; e; e = e->sock_next) {
		if (!(m & (e->events | EPOLLERR | EPOLLHUP)))
			continue;
		pthread_mutex_lock(&e->ep->mu);
		ready_add(e->ep, e);
		pthread_mutex_unlock(&e->ep->mu);
	}
	pthread_mutex_unlock(&g.mu);
}

static int poll_ours_ready(void *arg)
{
	struct poll_ctx *c = arg;
	for (nfds_t i = 0; i < c->n; i++) {
		struct psock *p = offloaded(c->fds[i].fd);
		if (p && to_poll(sock_poll(p), c->fds[i].events))
			return 1;
	}
	return 0;
}

static int pno_poll(struct pollfd *fds, nfds_t n, int timeout, const sigset_t *mask)
{
	int any = 0;
	for (nfds_t i = 0; i < n; i++)
		if (offloaded(fds[i].fd))
			any = 1;
	if (!any) {
		if (mask) {
			struct timespec ts = { timeout / 1000, (long)(timeout % 1000) * 1000000 };
			return real.ppoll(fds, n, timeout < 0 ? NULL : &ts, mask);
		}
		return real.poll(fds, n, timeout);
	}
	struct pollfd stack[64];
	struct pollfd *kf = n <= 64 ? stack : malloc(sizeof(*kf) * n);
	struct psock *pstack[64];
	struct psock **ps = n <= 64 ? pstack : malloc(sizeof(*ps) * n);
	if (!kf || !ps)
		return fail(ENOMEM);
	uint64_t deadline = timeout > 0 ? now_ns() + (uint64_t)timeout * 1000000 : 0;
	int result;
	for (;;) {
		int nk = 0, np = 0, ready = 0;
		for (nfds_t i = 0; i < n; i++) {
			struct psock *p = offloaded(fds[i].fd);
			fds[i].revents = 0;
			if (p) {
				ps[np++] = p;
				fds[i].revents = to_poll(sock_poll(p), fds[i].events);
			}
			if (!p || p->loop_listening) {
				kf[nk] = fds[i];
				kf[nk].fd = fds[i].fd;
				nk++;
			}
			if (fds[i].revents)
				ready++;
		}
		int left = timeout;
		if (deadline) {
			uint64_t now = now_ns();
			left = now >= deadline ? 0 : (int)((deadline - now + 999999) / 1000000);
		}
		int r;
		struct poll_ctx ctx = { fds, n };
		if (ready > 0 || left == 0)
			r = real.poll(kf, (nfds_t)nk, 0);
		else
			r = block_on(ps, np, poll_ours_ready, &ctx, kf, nk, left, mask);
		if (r < 0 && errno == EINTR) {
			result = -1;
			break;
		}
		int k = 0;
		ready = 0;
		for (nfds_t i = 0; i < n; i++) {
			struct psock *p = offloaded(fds[i].fd);
			short kre = 0;
			if (!p || p->loop_listening)
				kre = r > 0 ? kf[k++].revents : 0;
			uint32_t m = p ? sock_poll(p) : 0;
			if (p)
				note_ready(p, m);
			fds[i].revents = p ? (short)(to_poll(m, fds[i].events) | (kre & POLLIN)) : kre;
			if (fds[i].revents)
				ready++;
		}
		if (ready > 0 || left == 0) {
			result = ready;
			break;
		}
	}
	if (kf != stack)
		free(kf);
	if (ps != pstack)
		free(ps);
	return result;
}

EXPORT int poll(struct pollfd *fds, nfds_t n, int timeout)
{
	REAL();
	if (g.attached <= 0)
		return real.poll(fds, n, timeout);
	return pno_poll(fds, n, timeout, NULL);
}

EXPORT int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *ts, const sigset_t *mask)
{
	REAL();
	if (g.attached <= 0)
		return real.ppoll(fds, n, ts, mask);
	int timeout = ts ? (int)(ts->tv_sec * 1000 + (ts->tv_nsec + 999999) / 1000000) : -1;
	return pno_poll(fds, n, timeout, mask);
}

static int pno_select(int nfds, fd_set *rd, fd_set *wr, fd_set *ex, int timeout,
		      const sigset_t *mask)
{
	if (nfds < 0 || nfds > FD_SETSIZE)
		return fail(EINVAL);
	struct pollfd fds[FD_SETSIZE];
	int n = 0;
	for (int fd = 0; fd < nfds; fd++) {
		short ev = 0;
		if (rd && FD_ISSET(fd, rd))
			ev |= POLLIN;
		if (wr && FD_ISSET(fd, wr))
			ev |= POLLOUT;
		if (ex && FD_ISSET(fd, ex))
			ev |= POLLPRI;
		if (ev)
			fds[n++] = (struct pollfd){ .fd = fd, .events = ev };
	}
	int r = pno_poll(fds, (nfds_t)n, timeout, mask);
	if (r < 0)
		return r;
	for (int i = 0; i < n; i++)
		if (fds[i].revents & POLLNVAL)
			return fail(EBADF);
	if (rd)
		FD_ZERO(rd);
	if (wr)
		FD_ZERO(wr);
	if (ex)
		FD_ZERO(ex);
	int count = 0;
	for (int i = 0; i < n; i++) {
		short re = fds[i].revents;
		/* As the kernel's select: errors and hangups make a descriptor readable/writable. */
		if (rd && (fds[i].events & POLLIN) && (re & (POLLIN | POLLHUP | POLLERR))) {
			FD_SET(fds[i].fd, rd);
			count++;
		}
		if (wr && (fds[i].events & POLLOUT) && (re & (POLLOUT | POLLERR))) {
			FD_SET(fds[i].fd, wr);
			count++;
		}
		if (ex && (fds[i].events & POLLPRI) && (re & POLLPRI)) {
			FD_SET(fds[i].fd, ex);
			count++;
		}
	}
	return count;
}

static int any_offloaded(int nfds, fd_set *rd, fd_set *wr, fd_set *ex)
{
	for (int fd = 0; fd < nfds && fd < FD_SETSIZE; fd++)
		if (((rd && FD_ISSET(fd, rd)) || (wr && FD_ISSET(fd, wr)) ||
		     (ex && FD_ISSET(fd, ex))) &&
		    offloaded(fd))
			return 1;
	return 0;
}

EXPORT int select(int nfds, fd_set *rd, fd_set *wr, fd_set *ex, struct timeval *tv)
{
	REAL();
	if (g.attached <= 0 || !any_offloaded(nfds, rd, wr, ex))
		return (int)real.syscall(SYS_select, nfds, rd, wr, ex, tv);
	int timeout = tv ? (int)(tv->tv_sec * 1000 + (tv->tv_usec + 999) / 1000) : -1;
	uint64_t start = now_ns();
	int r = pno_select(nfds, rd, wr, ex, timeout, NULL);
	if (tv) {
		uint64_t spent = (now_ns() - start) / 1000;
		uint64_t total = (uint64_t)tv->tv_sec * 1000000 + (uint64_t)tv->tv_usec;
		uint64_t left = spent >= total ? 0 : total - spent;
		tv->tv_sec = (time_t)(left / 1000000);
		tv->tv_usec = (suseconds_t)(left % 1000000);
	}
	return r;
}

EXPORT int pselect(int nfds, fd_set *rd, fd_set *wr, fd_set *ex, const struct timespec *ts,
		   const sigset_t *mask)
{
	REAL();
	if (g.attached <= 0 || !any_offloaded(nfds, rd, wr, ex)) {
		struct {
			const sigset_t *ss;
			size_t len;
		} data = { mask, _NSIG / 8 };
		struct timespec copy, *tp = NULL;
		if (ts) {
			copy = *ts;
			tp = &copy;
		}
		return (int)real.syscall(SYS_pselect6, nfds, rd, wr, ex, tp, mask ? &data : NULL);
	}
	int timeout = ts ? (int)(ts->tv_sec * 1000 + (ts->tv_nsec + 999999) / 1000000) : -1;
	return pno_select(nfds, rd, wr, ex, timeout, mask);
}

/* ---- fork and threads ------------------------------------------------------------------- */

/*
 * fork(): the child holds every socket the parent holds. Its process entry, with the same
 * per-socket counts and one more holder for each socket, is prepared before the fork while
 * the fd table is locked, so a parent closing a socket right after cannot close it under the
 * child. If the fork fails the preparation is undone.
 */
EXPORT pid_t fork(void)
{
	REAL();
	if (g.attached <= 0)
		return real.fork();
	pthread_mutex_lock(&g.mu);
	int child_proc = -1;
	uint32_t n = g.hdr->max_sockets;
	for (uint32_t i = 0; i < g.hdr->max_procs && child_proc < 0; i++) {
		struct pno_proc_line *pl = pno_region_proc(g.base, i);
		uint32_t zero = 0;
		/* Reserved with our own pid until the child writes its own. */
		if (__atomic_compare_exchange_n(&pl->pid, &zero, (uint32_t)mypid(), 0,
						__ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
			child_proc = (int)i;
	}
	uint16_t *mine = proc_refs();
	if (child_proc >= 0) {
		uint16_t *theirs = pno_region_proc_refs(g.base, (uint32_t)child_proc);
		for (uint32_t s = 0; s < n; s++) {
			theirs[s] = mine[s];
			if (mine[s])
				__atomic_add_fetch(&line(s)->holders, 1, __ATOMIC_SEQ_CST);
		}
	}
	pthread_mutex_lock(&g.ctl_mu);
	int child_ctl = ctl_open_join();
	struct pooled_waiter child_pool[WAITER_POOL];
	int child_n = child_ctl >= 0 ?
		register_waiters(child_ctl, mypid(), WAITER_POOL, child_pool) : 0;
	pthread_mutex_unlock(&g.ctl_mu);
	pid_t pid = real.fork();
	if (pid == 0) {
		/* Child: its own entry, no thread rings of its own yet, the waiters made for it. */
		__atomic_store_n(&my_pid, getpid(), __ATOMIC_RELAXED);
		pthread_mutex_init(&g.mu, NULL);
		pthread_mutex_init(&g.ctl_mu, NULL);
		pthread_mutex_init(&pool.mu, NULL);
		self = NULL;
		ctl_adopt(child_ctl);
		for (int k = 0; k < pool.n; k++)
			forget_pooled(&pool.e[k], 0); /* the parent's: its copies stay with it */
		for (int k = 0; k < child_n; k++) {
			__atomic_store_n(&pno_region_waiter(g.base, (uint32_t)child_pool[k].idx)->owner_pid,
					 (uint32_t)mypid(), __ATOMIC_RELEASE);
			pool.e[k] = child_pool[k];
		}
		pool.n = child_n;
		pool.pid = mypid();
		if (child_proc >= 0) {
			g.proc = child_proc;
			pno_region_proc(g.base, (uint32_t)child_proc)->parent = 0;
			__atomic_store_n(&pno_region_proc(g.base, (uint32_t)child_proc)->pid,
					 (uint32_t)mypid(), __ATOMIC_SEQ_CST);
		}
		return 0;
	}
	if (child_ctl >= 0)
		real.close(child_ctl);
	for (int k = 0; k < child_n; k++)
		forget_pooled(&child_pool[k], pid < 0); /* the child's (if the fork failed, nobody's) */
	if (pid < 0 && child_proc >= 0) {
		uint16_t *theirs = pno_region_proc_refs(g.base, (uint32_t)child_proc);
		for (uint32_t s = 0; s < n; s++) {
			if (theirs[s] &&
			    __atomic_sub_fetch(&line(s)->holders, 1, __ATOMIC_SEQ_CST) == 0) {
				struct psock tmp = { .kind = P_OFFLOADED, .slot = s,
						     .gen = line(s)->gen };
				post_simple(&tmp, PNO_CMD_CLOSE, -1, 0, 0, 0);
			}
			theirs[s] = 0;
		}
		__atomic_store_n(&pno_region_proc(g.base, (uint32_t)child_proc)->pid, 0,
				 __ATOMIC_SEQ_CST);
	}
	pthread_mutex_unlock(&g.mu);
	return pid;
}

static void release_thread(void *arg)
{
	struct thr *t = arg;
	if (!t || g.attached <= 0 || t->pid != mypid())
		return;
	if (t->waiter >= 0) {
		self = t; /* release_waiter posts on this thread's ring */
		release_waiter(t->waiter, t->wgen);
		g.internal[t->wake_rd] = 0;
		real.close(t->wake_rd);
	}
	__atomic_store_n(&pno_region_thread(g.base, (uint32_t)t->entry)->owner_tid, 0,
			 __ATOMIC_RELEASE);
	self = NULL;
	free(t);
}

static void inherit_adopt(void);
static void save_shim_env(void);

/* Any fork, also one libc makes internally (daemon(), say): the child is a new process. */
static void atfork_child(void)
{
	__atomic_store_n(&my_pid, getpid(), __ATOMIC_RELAXED);
	self = NULL;
}

__attribute__((constructor)) static void pno_init(void)
{
	REAL();
	pthread_key_create(&g.thr_key, release_thread);
	pthread_atfork(NULL, NULL, atfork_child);
	/* PNO_DISABLE: the shim stays loaded but offloads nothing (read once, not per socket). */
	g.disabled = getenv("PNO_DISABLE") != NULL;
	save_shim_env();
	inherit_adopt();
}

/* ---- exec ------------------------------------------------------------------------------ */

/*
 * exec() replaces the image and with it the mapping of the region. Offloaded fds marked
 * close-on-exec are closed first as close() would close them (the kernel closes their
 * placeholders); the process's thread and waiter entries are freed. The process stays in the
 * application (its region) across the exec, with or without sockets. Offloaded fds without
 * FD_CLOEXEC are inherited, as the kernel's sockets are (nginx's binary upgrade passes its
 * listeners in the NGINX variable, HAProxy's master re-executes itself): the process keeps its
 * entry and its references (exec keeps the pid), the region's memfd, the control socket and
 * the bridge's eventfd stay open across the exec, and PNO_INHERIT in the new environment
 * says where they are and which fd is which socket. The shim of the new image maps the region
 * again before main() and takes the fds back (inherit_adopt). If exec fails the process goes
 * on with the fds it had and claims thread entries anew on its next call.
 *
 * PNO_INHERIT=1,PID,REGION_FD,SIZE,CTL_FD,EFD,PROC,CTL_PID,REGION_ID,CTL_PATH;FD:SLOT:GEN:FLAGS;...
 */
#define INHERIT_VAR "PNO_INHERIT"
enum {
	INH_LISTENING = 1, INH_BOUND_ANY = 2, INH_LOOP_LISTENING = 4, INH_REUSEADDR = 8,
	INH_REUSEPORT = 16, INH_NODELAY = 32, INH_KEEPALIVE = 64, INH_INHERITED = 128,
};

/* The record of the offloaded fds that survive exec, or NULL when none does. Holds g.mu. */
static char *inherit_record(void)
{
	size_t cap = 4096, len = 0;
	char *rec = malloc(cap);
	if (!rec)
		return NULL;
	len = (size_t)snprintf(rec, cap, INHERIT_VAR "=1,%d,%d,%llu,%d,%d,%d,%d,%u,%s", (int)mypid(),
			       g.region_fd, (unsigned long long)g.size, g.ctl_fd, g.bridge_efd,
			       g.proc, (int)g.ctl_pid, g.region_id, g.ctl_path);
	int n = 0;
	for (int fd = 0; fd < MAX_FDS; fd++) {
		struct psock *p = g.files[fd];
		if (!p || p->kind != P_OFFLOADED || (real.fcntl(fd, F_GETFD) & FD_CLOEXEC))
			continue;
		if (cap - len < 64) {
			char *bigger = realloc(rec, cap * 2);
			if (!bigger)
				break;
			rec = bigger;
			cap *= 2;
		}
		int flags = (p->listening ? INH_LISTENING : 0) | (p->bound_any ? INH_BOUND_ANY : 0) |
			    (p->loop_listening ? INH_LOOP_LISTENING : 0) |
			    (p->reuseaddr ? INH_REUSEADDR : 0) | (p->reuseport ? INH_REUSEPORT : 0) |
			    (p->nodelay ? INH_NODELAY : 0) | (p->keepalive ? INH_KEEPALIVE : 0) |
			    (p->inherited ? INH_INHERITED : 0);
		len += (size_t)snprintf(rec + len, cap - len, ";%d:%u:%u:%d", fd, p->slot, p->gen,
					flags);
		n++;
	}
	/*
	 * Even with no socket to inherit, the new image stays in the application: it may be
	 * handed sockets later (HAProxy's re-executed master takes the listeners back from the
	 * old worker over SCM_RIGHTS), and only a process of the region can take them.
	 */
	(void)n;
	if (g.region_fd < 0) {
		free(rec);
		return NULL;
	}
	return rec;
}

static void set_cloexec(int fd, int on)
{
	if (fd >= 0)
		real.fcntl(fd, F_SETFD, on ? FD_CLOEXEC : 0);
}

/*
 * The variables that put the shim in a process, as they were when it started: a program that
 * executes itself with an environment of its own making (nginx's binary upgrade keeps only TZ
 * and NGINX) would otherwise start its new image without the shim, holding sockets it cannot
 * reach. They are put back, when missing, into the environment of an exec that passes the
 * region on.
 */
static const char *const SHIM_VARS[] = {
	"LD_PRELOAD", "PNO_CONTROL", "PNO_POLICY", "PNO_REQUIRED", "PNO_SPIN_US",
	"PNO_OFFLOAD_PREFIX", "PNO_DEBUG",
};
#define N_SHIM_VARS (sizeof(SHIM_VARS) / sizeof(SHIM_VARS[0]))
static char *shim_env[N_SHIM_VARS];

static void save_shim_env(void)
{
	for (size_t i = 0; i < N_SHIM_VARS; i++) {
		const char *v = getenv(SHIM_VARS[i]);
		if (!v)
			continue;
		size_t len = strlen(SHIM_VARS[i]) + 1 + strlen(v) + 1;
		shim_env[i] = malloc(len);
		if (shim_env[i])
			snprintf(shim_env[i], len, "%s=%s", SHIM_VARS[i], v);
	}
}

static int env_has(char *const envp[], size_t n, const char *name)
{
	size_t len = strlen(name);
	for (size_t i = 0; i < n; i++)
		if (strncmp(envp[i], name, len) == 0 && envp[i][len] == '=')
			return 1;
	return 0;
}

/*
 * envp without any PNO_INHERIT; with `rec` (the region goes on), `rec` and the shim's
 * variables the program left out.
 */
static char **inherit_env(char *const envp[], char *rec)
{
	size_t n = 0;
	while (envp && envp[n])
		n++;
	char **out = malloc((n + 2 + N_SHIM_VARS) * sizeof(char *));
	if (!out)
		return NULL;
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		if (strncmp(envp[i], INHERIT_VAR "=", sizeof(INHERIT_VAR)) != 0)
			out[k++] = envp[i];
	if (rec) {
		out[k++] = rec;
		for (size_t i = 0; i < N_SHIM_VARS; i++)
			if (shim_env[i] && !env_has(envp, n, SHIM_VARS[i]))
				out[k++] = shim_env[i];
	}
	out[k] = NULL;
	return out;
}

/* What before_exec prepared, undone by exec_failed. */
struct exec_prep {
	char *rec;
	char **env;
};

static struct exec_prep before_exec(char *const envp[])
{
	struct exec_prep prep = { NULL, NULL };
	if (g.attached <= 0)
		return prep;
	pthread_mutex_lock(&g.mu);
	prep.rec = inherit_record();
	for (int fd = 0; fd < MAX_FDS; fd++) {
		struct psock *p = g.files[fd];
		if (p && p->kind == P_OFFLOADED && (real.fcntl(fd, F_GETFD) & FD_CLOEXEC))
			drop_fd_locked(fd);
	}
	pid_t me = mypid();
	for (uint32_t i = 0; i < g.hdr->max_waiters; i++) {
		struct pno_waiter_line *wl = pno_region_waiter(g.base, i);
		if (__atomic_load_n(&wl->owner_pid, __ATOMIC_ACQUIRE) == (uint32_t)me)
			release_waiter((int)i, wl->gen);
	}
	for (uint32_t i = 0; i < g.hdr->max_threads; i++) {
		struct pno_thread_line *tl = pno_region_thread(g.base, i);
		if (tl->owner_pid == (uint32_t)me)
			__atomic_store_n(&tl->owner_tid, 0, __ATOMIC_RELEASE);
	}
	self = NULL;
	if (prep.rec) {
		set_cloexec(g.region_fd, 0);
		set_cloexec(g.ctl_fd, 0);
		set_cloexec(g.bridge_efd, 0);
	}
	pthread_mutex_unlock(&g.mu);
	prep.env = inherit_env(envp, prep.rec);
	return prep;
}

static int exec_failed(struct exec_prep *prep)
{
	int e = errno;
	if (prep->rec) {
		set_cloexec(g.region_fd, 1);
		set_cloexec(g.ctl_fd, 1);
		set_cloexec(g.bridge_efd, 1);
	}
	free(prep->env);
	free(prep->rec);
	errno = e;
	return -1;
}

extern char **environ;

EXPORT int execve(const char *path, char *const argv[], char *const envp[])
{
	REAL();
	struct exec_prep prep = before_exec(envp);
	real.execve(path, argv, prep.env ? prep.env : envp);
	return exec_failed(&prep);
}

EXPORT int execv(const char *path, char *const argv[])
{
	REAL();
	struct exec_prep prep = before_exec(environ);
	real.execve(path, argv, prep.env ? prep.env : environ);
	return exec_failed(&prep);
}

EXPORT int execvp(const char *file, char *const argv[])
{
	REAL();
	struct exec_prep prep = before_exec(environ);
	real.execvpe(file, argv, prep.env ? prep.env : environ);
	return exec_failed(&prep);
}

EXPORT int execvpe(const char *file, char *const argv[], char *const envp[])
{
	REAL();
	struct exec_prep prep = before_exec(envp);
	real.execvpe(file, argv, prep.env ? prep.env : envp);
	return exec_failed(&prep);
}

EXPORT int fexecve(int fd, char *const argv[], char *const envp[])
{
	REAL();
	struct exec_prep prep = before_exec(envp);
	real.fexecve(fd, argv, prep.env ? prep.env : envp);
	return exec_failed(&prep);
}

/*
 * execl, execlp and execle call execve inside libc, past our execve: they are taken here and
 * made into the vector forms, as libc itself does.
 */
#define EXEC_MAX_ARGS 4096

static int collect_args(const char *arg0, va_list ap, char **argv, char ***envp)
{
	int n = 0;
	argv[n++] = (char *)arg0;
	while (arg0 && n < EXEC_MAX_ARGS) {
		char *a = va_arg(ap, char *);
		argv[n++] = a;
		if (!a)
			break;
	}
	if (n == EXEC_MAX_ARGS && argv[n - 1]) {
		errno = E2BIG;
		return -1;
	}
	if (!arg0)
		argv[0] = NULL;
	if (envp)
		*envp = va_arg(ap, char **);
	return 0;
}

/* Runs one of the vector forms on the list form's arguments (envp only for execle). */
enum { VIA_EXECV, VIA_EXECVP, VIA_EXECVE };

static int exec_list(int via, const char *file, const char *arg, va_list ap)
{
	char **argv = malloc(EXEC_MAX_ARGS * sizeof(char *));
	if (!argv)
		return fail(ENOMEM);
	char **envp = NULL;
	int r = collect_args(arg, ap, argv, via == VIA_EXECVE ? &envp : NULL);
	if (r == 0)
		r = via == VIA_EXECV ? execv(file, argv)
		  : via == VIA_EXECVP ? execvp(file, argv) : execve(file, argv, envp);
	int e = errno;
	free(argv);
	errno = e;
	return r;
}

EXPORT int execl(const char *path, const char *arg, ...)
{
	va_list ap;
	va_start(ap, arg);
	int r = exec_list(VIA_EXECV, path, arg, ap);
	va_end(ap);
	return r;
}

EXPORT int execlp(const char *file, const char *arg, ...)
{
	va_list ap;
	va_start(ap, arg);
	int r = exec_list(VIA_EXECVP, file, arg, ap);
	va_end(ap);
	return r;
}

EXPORT int execle(const char *path, const char *arg, ...)
{
	va_list ap;
	va_start(ap, arg);
	int r = exec_list(VIA_EXECVE, path, arg, ap);
	va_end(ap);
	return r;
}

/* Marks an fd the new image inherited from the shim as internal again (and close-on-exec). */
static void reclaim_internal(int fd)
{
	if (fd < 0 || fd >= MAX_FDS)
		return;
	set_cloexec(fd, 1);
	g.internal[fd] = 1;
}

/*
 * The new image's side of exec (from the constructor, before main): PNO_INHERIT names the
 * region, the control socket, the eventfd and the inherited sockets. A record left over from
 * another process (a program started by posix_spawn inherits the environment, not the fds'
 * meaning) is recognised by its pid and ignored; either way the variable is removed so that
 * nothing started later sees it.
 */
static void inherit_adopt(void)
{
	const char *v = getenv(INHERIT_VAR);
	if (!v)
		return;
	char *rec = strdup(v);
	unsetenv(INHERIT_VAR);
	if (!rec)
		return;
	int ver = 0, pid = 0, rfd = -1, ctl = -1, efd = -1, proc = -1, ctl_pid = 0, used = 0;
	unsigned long long size = 0;
	unsigned region_id = 0;
	char path[108] = "";
	if (sscanf(rec, "%d,%d,%d,%llu,%d,%d,%d,%d,%u,%107[^;]%n", &ver, &pid, &rfd, &size, &ctl,
		   &efd, &proc, &ctl_pid, &region_id, path, &used) < 10 ||
	    ver != 1 || pid != (int)getpid()) {
		free(rec);
		return;
	}
	void *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, rfd, 0);
	if (base == MAP_FAILED || pno_region_check(base, size) != 0) {
		warnx_once("pno: the region inherited across exec cannot be mapped: the inherited "
			   "sockets are left as they are\n");
		if (base != MAP_FAILED)
			munmap(base, size);
		free(rec);
		return;
	}
	const struct pno_region_header *hdr = base;
	if (proc < 0 || (uint32_t)proc >= hdr->max_procs ||
	    __atomic_load_n(&pno_region_proc(base, (uint32_t)proc)->pid, __ATOMIC_ACQUIRE) !=
		    (uint32_t)getpid()) {
		munmap(base, size);
		free(rec);
		return;
	}
	g.base = base;
	g.size = size;
	g.hdr = hdr;
	g.local_ip = hdr->local_ip;
	g.region_fd = rfd;
	g.ctl_fd = ctl;
	g.ctl_pid = ctl_pid;
	g.region_id = region_id;
	snprintf(g.ctl_path, sizeof(g.ctl_path), "%s", path);
	g.bridge_efd = efd;
	g.proc = proc;
	reclaim_internal(rfd);
	reclaim_internal(ctl);
	reclaim_internal(efd);
	parse_policy();
	policy_defaults();
	for (char *item = strtok(rec + used, ";"); item; item = strtok(NULL, ";")) {
		int fd = -1, flags = 0;
		unsigned slot = 0, gen = 0;
		if (sscanf(item, "%d:%u:%u:%d", &fd, &slot, &gen, &flags) != 4 || fd < 0 ||
		    fd >= MAX_FDS || slot >= hdr->max_sockets)
			continue;
		struct stat st;
		if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode) ||
		    __atomic_load_n(&line(slot)->gen, __ATOMIC_ACQUIRE) != gen ||
		    __atomic_load_n(&proc_refs()[slot], __ATOMIC_ACQUIRE) == 0)
			continue;
		/* dup()s of one socket share one psock, as before the exec. */
		struct psock *p = psock_of(slot, gen);
		if (p) {
			p->fdrefs++;
		} else {
			p = adopted_psock(fd, slot, gen);
			if (!p)
				continue;
			p->listening = (flags & INH_LISTENING) != 0;
			p->bound_any = (flags & INH_BOUND_ANY) != 0;
			p->loop_listening = (flags & INH_LOOP_LISTENING) != 0;
			p->reuseaddr = (flags & INH_REUSEADDR) != 0;
			p->reuseport = (flags & INH_REUSEPORT) != 0;
			p->nodelay = (flags & INH_NODELAY) != 0;
			p->keepalive = (flags & INH_KEEPALIVE) != 0;
			p->inherited = (flags & INH_INHERITED) != 0;
			p->kind = P_OFFLOADED;
		}
		register_fd(fd, p);
	}
	free(rec);
	__atomic_store_n(&g.attached, 1, __ATOMIC_RELEASE);
	pool_fill();
}

/* ---- raw syscall() ------------------------------------------------------------------------ */

/*
 * Programs that call syscall(SYS_read, ...) directly reach the same code as read(). Numbers
 * the shim does not serve go to the kernel with all six arguments.
 */
EXPORT long syscall(long nr, ...)
{
	REAL();
	va_list ap;
	va_start(ap, nr);
	long a = va_arg(ap, long), b = va_arg(ap, long), c = va_arg(ap, long);
	long d = va_arg(ap, long), e = va_arg(ap, long), f = va_arg(ap, long);
	va_end(ap);
	switch (nr) {
	case SYS_read: return read((int)a, (void *)b, (size_t)c);
	case SYS_write: return write((int)a, (const void *)b, (size_t)c);
	case SYS_readv: return readv((int)a, (const struct iovec *)b, (int)c);
	case SYS_writev: return writev((int)a, (const struct iovec *)b, (int)c);
	case SYS_close: return close((int)a);
	case SYS_socket: return socket((int)a, (int)b, (int)c);
	case SYS_bind: return bind((int)a, (const struct sockaddr *)b, (socklen_t)c);
	case SYS_listen: return listen((int)a, (int)b);
	case SYS_accept: return accept4((int)a, (struct sockaddr *)b, (socklen_t *)c, 0);
	case SYS_accept4: return accept4((int)a, (struct sockaddr *)b, (socklen_t *)c, (int)d);
	case SYS_connect: return connect((int)a, (const struct sockaddr *)b, (socklen_t)c);
	case SYS_recvfrom:
		return recvfrom((int)a, (void *)b, (size_t)c, (int)d, (struct sockaddr *)e,
				(socklen_t *)f);
	case SYS_sendto:
		return sendto((int)a, (const void *)b, (size_t)c, (int)d,
			      (const struct sockaddr *)e, (socklen_t)f);
	case SYS_recvmsg: return recvmsg((int)a, (struct msghdr *)b, (int)c);
	case SYS_sendmsg: return sendmsg((int)a, (const struct msghdr *)b, (int)c);
	case SYS_shutdown: return shutdown((int)a, (int)b);
	case SYS_getsockname: return getsockname((int)a, (struct sockaddr *)b, (socklen_t *)c);
	case SYS_getpeername: return getpeername((int)a, (struct sockaddr *)b, (socklen_t *)c);
	case SYS_getsockopt:
		return getsockopt((int)a, (int)b, (int)c, (void *)d, (socklen_t *)e);
	case SYS_setsockopt:
		return setsockopt((int)a, (int)b, (int)c, (const void *)d, (socklen_t)e);
	case SYS_sendfile: return sendfile((int)a, (int)b, (off_t *)c, (size_t)d);
	case SYS_dup: return dup((int)a);
	case SYS_dup2: return dup2((int)a, (int)b);
	case SYS_dup3: return dup3((int)a, (int)b, (int)c);
	case SYS_fcntl: return fcntl((int)a, (int)b, c);
	case SYS_ioctl: return ioctl((int)a, (unsigned long)b, (void *)c);
	case SYS_epoll_create1: return epoll_create1((int)a);
	case SYS_epoll_ctl: return epoll_ctl((int)a, (int)b, (int)c, (struct epoll_event *)d);
	case SYS_epoll_wait: return epoll_wait((int)a, (struct epoll_event *)b, (int)c, (int)d);
	case SYS_epoll_pwait:
		return epoll_pwait((int)a, (struct epoll_event *)b, (int)c, (int)d,
				   (const sigset_t *)e);
	case SYS_poll: return poll((struct pollfd *)a, (nfds_t)b, (int)c);
	}
	return real.syscall(nr, a, b, c, d, e, f);
}

/* ---- _FORTIFY_SOURCE variants ----------------------------------------------------------- */

extern void __chk_fail(void) __attribute__((noreturn));

EXPORT ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen)
{
	if (n > buflen)
		__chk_fail();
	return read(fd, buf, n);
}

EXPORT ssize_t __recv_chk(int fd, void *buf, size_t n, size_t buflen, int flags)
{
	if (n > buflen)
		__chk_fail();
	return recv(fd, buf, n, flags);
}

EXPORT ssize_t __recvfrom_chk(int fd, void *buf, size_t n, size_t buflen, int flags,
			      struct sockaddr *a, socklen_t *al)
{
	if (n > buflen)
		__chk_fail();
	return recvfrom(fd, buf, n, flags, a, al);
}

EXPORT int __poll_chk(struct pollfd *fds, nfds_t n, int timeout, size_t fdslen)
{
	if (fdslen / sizeof(*fds) < n)
		__chk_fail();
	return poll(fds, n, timeout);
}

// The one C module of Tern: every system header the Swift code needs, and small
// shims for what does not import (function-like macros, packed structs, unions).
// Keep all glibc includes here: two C modules that both include them clash.
#ifndef CTERNSYSTEM_H
#define CTERNSYSTEM_H

// No _GNU_SOURCE here: the headers must mean the same as in Swift's own Glibc module, or the
// two modules clash on fd_set. Functions that need _GNU_SOURCE (accept4) live in shim.c.

#include <errno.h>
#include <malloc.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <netdb.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <liburing.h>
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>
#include <openssl/rand.h>
#include <openssl/crypto.h>

/// epoll_ctl with a 64-bit token (struct epoll_event is packed on x86_64).
int tern_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t token);

/// epoll_wait that unpacks events into two parallel arrays.
int tern_epoll_wait(int epfd, uint64_t *tokens, uint32_t *events, int max, int timeout_ms);

/// accept4 with SOCK_NONBLOCK | SOCK_CLOEXEC; the peer address is not returned.
int tern_accept(int fd);

/// A TCP listener on a numeric address (IPv4 or IPv6), non-blocking, SO_REUSEADDR,
/// optional SO_REUSEPORT. Returns the fd or -errno.
int tern_listen_tcp(const char *host, int port, int reuseport, int backlog);

/// The local port a socket is bound to, or -errno.
int tern_local_port(int fd);

/// Starts a non-blocking TCP connect to a numeric address. Returns the fd or -errno.
/// *in_progress is set to 1 when the connection is not complete yet (EINPROGRESS).
int tern_connect_tcp(const char *host, int port, int *in_progress);

/// The peer's numeric address ("192.0.2.1" or "2001:db8::1") into buf; 0 or -errno.
int tern_peer_address(int fd, char *buf, int len);

/// pipe2(2) with O_CLOEXEC (needs _GNU_SOURCE): 0 or -errno.
int tern_pipe_cloexec(int fds[2]);

/// syncfs(2) (needs _GNU_SOURCE, so it lives in the shim): 0 or -errno.
int tern_syncfs(int fd);

/// pthread_timedjoin_np (needs _GNU_SOURCE) waiting at most `seconds`: 0, or ETIMEDOUT.
int tern_join_within(pthread_t thread, double seconds);

/// fallocate(PUNCH_HOLE | KEEP_SIZE) over a byte range (needs _GNU_SOURCE): 0 or -errno.
int tern_punch_hole(int fd, off_t offset, off_t length);

/// copy_file_range(2) of up to `length` bytes from the current offsets (needs _GNU_SOURCE): bytes
/// copied, or -1 with errno set.
ssize_t tern_copy_range(int from, int to, size_t length);

/// copy_file_range(2) between explicit offsets (advanced by what was copied): bytes copied, or -1
/// with errno set.
ssize_t tern_copy_range_at(int from, int64_t *from_offset, int to, int64_t *to_offset, size_t length);

/// An unnamed file in `directory` (O_TMPFILE, O_RDWR, O_CLOEXEC, mode 0600; needs _GNU_SOURCE):
/// the descriptor, or -errno (-EOPNOTSUPP where the file system has no O_TMPFILE).
int tern_open_unnamed(const char *directory);

/// mkostemp(3) with O_CLOEXEC (needs _GNU_SOURCE): the descriptor, or -errno.
int tern_mkstemp_cloexec(char *template_path);

/// Names the calling thread (15 bytes at most show in ps and top): 0 or -errno.
int tern_set_thread_name(const char *name);

/// Bytes allocated with malloc and not freed (mallinfo2), for soak tests.
size_t tern_heap_in_use(void);

/// Whether the CPU has a CRC-32C instruction (x86-64 SSE 4.2); 0 elsewhere.
int tern_crc32c_hw_available(void);
/// CRC-32C update with the CPU instruction: `crc` is the running (inverted) value. Only call when
/// tern_crc32c_hw_available() is 1.
uint32_t tern_crc32c_hw(uint32_t crc, const void *data, size_t length);

/// SO_ERROR of a socket (0 when connected), or -errno when getsockopt fails.
int tern_socket_error(int fd);
/// A non-blocking UDP socket connected to a numeric address (random ephemeral source port);
/// the fd, or -errno.
int tern_connect_udp(const char *host, int port);

/// Sets TCP_NODELAY.
int tern_set_nodelay(int fd);

/// CLOCK_MONOTONIC in nanoseconds.
uint64_t tern_monotonic_ns(void);

/// Current thread's CPU time (user+system) in nanoseconds.
uint64_t tern_thread_cpu_ns(void);

/// Blocks the given signal in the calling thread and returns a signalfd for it (-errno on failure).
int tern_signalfd(const int *signals, int count);

/// Reads one signal from a signalfd; returns the signal number, 0 if none, -errno on error.
int tern_signalfd_read(int fd);

/// DKIM relaxed body canonicalisation's fast path: how many bytes from `p` (a multiple of 16,
/// stopping 16 or fewer bytes before the end) are surely left unchanged — no control character,
/// no space followed by white space or a control character. SSE2; 0 elsewhere.
size_t tern_relaxed_plain_prefix(const uint8_t *p, size_t n);

/// Tern's TLS policy on a context: TLS 1.2 and 1.3 only, modern AEAD ciphers, the server's
/// preference, no compression, no renegotiation, partial and moving writes, buffers released when
/// idle, an unexpected EOF treated as a close. Returns 1, or 0 on failure.
int tern_tls_configure(SSL_CTX *ctx, int server);
/// Caps the protocol version (0: the library's maximum). Below TLS 1.2 it also lowers the floor
/// and the security level: an old client, for tests of the server's refusal.
int tern_tls_set_max_version(SSL_CTX *ctx, int version);
/// Bytes waiting in a memory BIO.
size_t tern_bio_pending(BIO *bio);
/// The bytes waiting in a memory BIO, without copying (BIO_get_mem_data), and emptying it (BIO_reset).
long tern_bio_mem_data(BIO *bio, char **data);
void tern_bio_reset(BIO *bio);
/// Client: the SNI name to send and the name the certificate must carry.
int tern_tls_set_server_name(SSL *ssl, const char *name);

/// Certificates by name (SNI): during each handshake on `default_ctx`, the first of `contexts`
/// whose certificate carries the name the client asked for serves it; otherwise the default does.
/// The contexts are retained for the life of `default_ctx`.
int tern_tls_set_sni(SSL_CTX *default_ctx, SSL_CTX *const *contexts, int count);


// io_uring (uring.c): one ring per event loop thread.
typedef struct tern_uring tern_uring;
/// NULL on failure, with a negative errno in *err and the reason in *why.
tern_uring *tern_uring_create(unsigned entries, unsigned nbufs, unsigned bufsize, int *err, const char **why);
void tern_uring_destroy(tern_uring *u);
int tern_uring_accept_multishot(tern_uring *u, int fd, uint64_t ud);
int tern_uring_recv_multishot(tern_uring *u, int fd, uint64_t ud);
int tern_uring_poll(tern_uring *u, int fd, unsigned events, int multishot, uint64_t ud);
int tern_uring_cancel(tern_uring *u, uint64_t target, uint64_t ud);
/// A send of `len` bytes at `buf` (which must stay untouched until its completion; with `zc`,
/// until the IORING_CQE_F_NOTIF completion that follows).
int tern_uring_send(tern_uring *u, int fd, const void *buf, unsigned len, int zc, uint64_t ud);
/// Whether the kernel has IORING_OP_SEND_ZC (6.0).
int tern_uring_has_send_zc(tern_uring *u);
/// Submits what is queued and waits up to timeout_ns for a completion (0: do not wait, <0: forever).
/// Submits what is queued and waits up to `timeout_ns` (0: not at all) for `wait_nr` completions.
int tern_uring_wait(tern_uring *u, long long timeout_ns, unsigned wait_nr);
unsigned tern_uring_harvest(tern_uring *u, uint64_t *ud, int32_t *res, uint32_t *flags, unsigned n);
void *tern_uring_buffer(tern_uring *u, unsigned bid);
void tern_uring_recycle(tern_uring *u, unsigned bid);

// Starting programs (spawn.c).
/// posix_spawn of `path`: the child's descriptor i is fds[i] (0 <= i < nfds; every other one of
/// ours is closed on exec), no signal blocked, the default action for SIGPIPE, SIGTERM, SIGINT,
/// SIGHUP, SIGCHLD and the other signals ternd handles. 0 or an errno value; the pid in *pid.
int tern_spawn(const char *path, char *const argv[], char *const envp[], const int *fds, int nfds, pid_t *pid);
/// A memory file (memfd, close-on-exec) holding `len` bytes, read from its start: a secret the
/// parent hands a child as one of its descriptors, never in its arguments or environment.
/// The descriptor, or -errno.
int tern_secret_fd(const void *bytes, int len);

// Confinement of a process (confine.c): what privilege separation applies to each child.
/// chroot(root) and chdir("/") when root is not NULL, then no supplementary groups, gid, uid
/// (real, effective and saved), and a check that root cannot be regained. 0 or -errno.
int tern_drop_privileges(unsigned uid, unsigned gid, const char *root);
/// no_new_privs, then a seccomp filter on every thread of the process: the `count` system call
/// numbers in `nrs` are allowed, any other (or another architecture's, or x32's) kills the
/// process with SIGSYS. 0 or -errno.
int tern_seccomp_allow(const int *nrs, int count);
/// The same, and the `refusedCount` calls in `refused` fail with `error` (an errno value) instead
/// of killing: calls a library may try harmlessly (open a file, ioctl on a terminal, start a
/// crash reporter) are refused, the rest of what is off the list kills. 0 or -errno.
int tern_seccomp_filter(const int *nrs, int count, const int *refused, int refusedCount, int error);
/// no_new_privs, then a seccomp filter on every thread for a process that may not reach the
/// network (lookup): socket(2) and socketpair(2) of any family but AF_UNIX, execve, ptrace,
/// mount, namespaces, io_uring_setup, bpf, module and key calls fail with `error`; the rest is
/// allowed (another architecture's or x32's calls kill). 0 or -errno.
int tern_seccomp_no_network(int error);
/// socket(AF_INET, SOCK_STREAM): 0 when it was made (and closed), else -errno (the test of
/// lookup's filter).
long tern_probe_network(void);
/// no_new_privs alone (for a process without a seccomp filter). 0 or -errno.
int tern_no_new_privs(void);
/// Close-on-exec on every descriptor from `first` up (close_range; one by one on old kernels).
int tern_cloexec_from(int first);
/// mount(2) with no arguments: a call off smtp's seccomp list, for the test that the filter kills.
long tern_probe_forbidden_call(void);
/// SIGKILL when the parent `parent` dies; -ESRCH when it already has. 0 or -errno.
int tern_die_with_parent(int parent);
enum { TERN_MAX_PASSED_FDS = 64 };
/// Passes 1 … TERN_MAX_PASSED_FDS descriptors over a Unix socket with a one-byte tag. 0 or -errno.
int tern_send_fds(int sock, const int *fds, int count, unsigned char tag);
/// Takes descriptors passed by `tern_send_fds` (close-on-exec, non-blocking read): their count,
/// 0 at end of input, -EAGAIN when nothing waits, or -errno (none kept then).
int tern_recv_fds(int sock, int *fds, int max, unsigned char *tag);
/// A connected, non-blocking, close-on-exec Unix stream socketpair. 0 or -errno.
int tern_socketpair(int fds[2]);
/// The calling thread's effective capability set (the low 64 bits), or -1.
long long tern_capabilities_effective(void);
/// The process title `ps` shows ("ternd: smtp"): written over the argument strings (their bytes
/// in all; a longer title is cut), and the thread name (15 bytes). Call with main's argc and argv
/// (CommandLine.unsafeArgv). Returns the length written, or -EINVAL.
int tern_set_process_title(int argc, char **argv, const char *title);
/// For tests: forks a child that sets `title` and waits to be killed; returns its pid or -errno.
int tern_test_titled_child(int argc, char **argv, const char *title);
/// For tests: forks; the child confines itself (uid/gid/root as `tern_drop_privileges`, then
/// `tern_seccomp_allow` unless count < 0) and then probes: 0 exits 0 when getuid() == uid,
/// no_new_privs is set, no capability is effective and only gid is a group (10 + which check
/// failed otherwise);
/// 1 calls socket(2), which must not be allowed; 2 tries to open `path` for reading and exits 0
/// when it cannot. Returns the child's wait status, or -errno when fork fails.
int tern_test_confined_child(unsigned uid, unsigned gid, const char *root, const int *nrs, int count, int probe, const char *path);
#endif

// Confinement of ternd's child processes (privilege separation, docs/security.md): a chroot, an
// unprivileged user, no_new_privs and a seccomp allowlist. In C because the filter is BPF built
// from kernel headers, and because tests run it in a forked child, where only plain system calls
// are safe.
#define _GNU_SOURCE 1
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

#include "CTernSystem.h"

#if defined(__x86_64__)
#define TERN_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define TERN_AUDIT_ARCH AUDIT_ARCH_AARCH64
#else
#error "confine.c: unknown architecture"
#endif

int tern_drop_privileges(unsigned uid, unsigned gid, const char *root) {
    if (root != NULL) {
        if (chroot(root) != 0) return -errno;
        if (chdir("/") != 0) return -errno;
    }
    if (setgroups(0, NULL) != 0) return -errno;
    if (setresgid(gid, gid, gid) != 0) return -errno;
    if (setresuid(uid, uid, uid) != 0) return -errno;
    // The change must stick: a process that can become root again was not confined.
    if (uid != 0 && (setuid(0) == 0 || seteuid(0) == 0)) return -EPERM;
    return 0;
}

enum { MAX_ALLOWED = 512 };

// The start of every filter: another architecture's numbers mean other calls, and the x32 ABI's
// calls (bit 30) alias the 64-bit ones: both kill. Leaves the call number loaded; returns the
// instructions written.
static int prologue(struct sock_filter *f) {
    int n = 0;
    f[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
    f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, TERN_AUDIT_ARCH, 1, 0);
    f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
    f[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
#if defined(__x86_64__)
    f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000, 0, 1);
    f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
#endif
    return n;
}

// no_new_privs, then the filter on every thread (TSYNC: a positive result is a thread that could
// not be synchronised). 0 or -errno.
static int install(struct sock_filter *f, int n) {
    struct sock_fprog prog = {.len = (unsigned short)n, .filter = f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -errno;
    long r = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog);
    if (r < 0) return -errno;
    if (r > 0) return -ESRCH;
    return 0;
}

int tern_seccomp_allow(const int *nrs, int count) { return tern_seccomp_filter(nrs, count, NULL, 0, 0); }

int tern_seccomp_filter(const int *nrs, int count, const int *refused, int refusedCount, int error) {
    if (count < 0 || count > MAX_ALLOWED || refusedCount < 0 || refusedCount > MAX_ALLOWED) return -EINVAL;
    struct sock_filter f[8 + 2 * MAX_ALLOWED + 2 * MAX_ALLOWED];
    int n = prologue(f);
    for (int i = 0; i < count; i++) {
        f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)nrs[i], 0, 1);
        f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    }
    for (int i = 0; i < refusedCount; i++) {
        f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)refused[i], 0, 1);
        f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (uint32_t)(error & SECCOMP_RET_DATA));
    }
    f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
    return install(f, n);
}

int tern_seccomp_no_network(int error) {
    // Refused with `error`: sockets of any family but AF_UNIX, running a program, and the calls
    // that change what the process can reach (io_uring too: its operations are not seen by
    // seccomp, so a ring could open a socket the filter refuses).
    static const int refused[] = {
        SYS_execve, SYS_execveat, SYS_ptrace, SYS_process_vm_writev, SYS_process_vm_readv, SYS_mount, SYS_umount2,
        SYS_pivot_root, SYS_chroot, SYS_setns, SYS_unshare, SYS_io_uring_setup, SYS_bpf, SYS_init_module,
        SYS_finit_module, SYS_delete_module, SYS_kexec_load, SYS_perf_event_open, SYS_keyctl, SYS_add_key,
        SYS_request_key, SYS_userfaultfd,
    };
    enum { N = sizeof refused / sizeof refused[0] };
    struct sock_filter f[16 + 2 * N];
    const uint32_t deny = SECCOMP_RET_ERRNO | (uint32_t)(error & SECCOMP_RET_DATA);
    int n = prologue(f);
    // socket(2) and socketpair(2): the family is the first argument (its low 32 bits).
    f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_socket, 1, 0);
    f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_socketpair, 0, 3);
    f[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0]));
    f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AF_UNIX, 0, 1);
    f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    // (Not AF_UNIX, or not socket(2): the number is needed again for the list.)
    f[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
    f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_socket, 1, 0);
    f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_socketpair, 0, 1);
    f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, deny);
    for (int i = 0; i < N; i++) {
        f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)refused[i], 0, 1);
        f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, deny);
    }
    f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    return install(f, n);
}

long tern_probe_network(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    close(fd);
    return 0;
}

long long tern_capabilities_effective(void) {
    struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct d[2];
    if (syscall(SYS_capget, &h, d) != 0) return -1;
    return (long long)(((uint64_t)d[1].effective << 32) | d[0].effective);
}

int tern_test_confined_child(unsigned uid, unsigned gid, const char *root, const int *nrs, int count, int probe, const char *path) {
    pid_t pid = fork();
    if (pid < 0) return -errno;
    if (pid == 0) {
        // As a parent started from a login shell would be: in a supplementary group, which the
        // confinement must drop.
        gid_t extra = 4;
        (void)setgroups(1, &extra);
        if (tern_drop_privileges(uid, gid, root) != 0) _exit(20);
        if (count >= 0 && tern_seccomp_allow(nrs, count) != 0) _exit(21);
        switch (probe) {
        case 0:
            if (getuid() != uid || geteuid() != uid) _exit(10);
            if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1) _exit(11);
            if (tern_capabilities_effective() != 0) _exit(12);
            if (getgroups(0, NULL) != 0 || getgid() != gid) _exit(13);
            _exit(0);
        case 1:
            (void)socket(AF_INET, SOCK_STREAM, 0);
            _exit(30);  // survived: the filter let it through
        case 2: {
            int fd = open(path, O_RDONLY);
            _exit(fd >= 0 ? 31 : 0);
        }
        default:
            _exit(40);
        }
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) return -errno;
    }
    return status;
}

int tern_set_process_title(int argc, char **argv, const char *title) {
    if (argc < 1 || argv == NULL || argv[0] == NULL) return -EINVAL;
    // The arguments lie end to end: the title may use all of their bytes (not the environment's,
    // which stays where programs and /proc/PID/environ expect it).
    char *start = argv[0];
    char *end = argv[0] + strlen(argv[0]) + 1;
    for (int i = 1; i < argc && argv[i] == end; i++) end = argv[i] + strlen(argv[i]) + 1;
    size_t room = (size_t)(end - start);
    size_t n = strlen(title);
    if (n > room - 1) n = room - 1;
    memcpy(start, title, n);
    memset(start + n, 0, room - n);
    // The thread name (ps -L, top): at most 15 bytes.
    char comm[16];
    size_t c = n < 15 ? n : 15;
    memcpy(comm, title, c);
    comm[c] = 0;
    (void)prctl(PR_SET_NAME, comm, 0, 0, 0);
    return (int)n;
}

int tern_test_titled_child(int argc, char **argv, const char *title) {
    pid_t pid = fork();
    if (pid != 0) return pid < 0 ? -errno : pid;
    (void)tern_set_process_title(argc, argv, title);
    for (;;) pause();
}

int tern_no_new_privs(void) {
    return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 ? 0 : -errno;
}

int tern_die_with_parent(int parent) {
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) return -errno;
    // The parent may have died before the request: then it is not ours any more.
    return getppid() == (pid_t)parent ? 0 : -ESRCH;
}

int tern_send_fds(int sock, const int *fds, int count, unsigned char tag) {
    if (count < 1 || count > TERN_MAX_PASSED_FDS) return -EINVAL;
    union {
        char buf[CMSG_SPACE(sizeof(int) * TERN_MAX_PASSED_FDS)];
        struct cmsghdr align;
    } control;
    memset(&control, 0, sizeof control);
    struct iovec iov = {.iov_base = &tag, .iov_len = 1};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf, .msg_controllen = CMSG_SPACE(sizeof(int) * count)};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * count);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * count);
    for (;;) {
        ssize_t r = sendmsg(sock, &msg, MSG_NOSIGNAL);
        if (r == 1) return 0;
        if (r < 0 && errno == EINTR) continue;
        return r < 0 ? -errno : -EIO;
    }
}

int tern_recv_fds(int sock, int *fds, int max, unsigned char *tag) {
    union {
        char buf[CMSG_SPACE(sizeof(int) * TERN_MAX_PASSED_FDS)];
        struct cmsghdr align;
    } control;
    struct iovec iov = {.iov_base = tag, .iov_len = 1};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf, .msg_controllen = sizeof control.buf};
    ssize_t r;
    do {
        r = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    } while (r < 0 && errno == EINTR);
    if (r < 0) return -errno;
    if (r == 0) return 0;
    int n = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        int got[TERN_MAX_PASSED_FDS];
        memcpy(got, CMSG_DATA(c), sizeof(int) * (size_t)k);
        for (int i = 0; i < k; i++) {
            // More than asked for, or a cut-off control message: none of them is kept.
            if (n < max && !(msg.msg_flags & MSG_CTRUNC)) fds[n++] = got[i];
            else close(got[i]);
        }
    }
    if (msg.msg_flags & MSG_CTRUNC) {
        for (int i = 0; i < n; i++) close(fds[i]);
        return -EMSGSIZE;
    }
    return n == 0 ? -ENOMSG : n;
}

int tern_socketpair(int fds[2]) {
    return socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, fds) == 0 ? 0 : -errno;
}

int tern_cloexec_from(int first) {
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
    if (syscall(SYS_close_range, (unsigned)first, ~0U, CLOSE_RANGE_CLOEXEC) == 0) return 0;
    // Older kernels: each open descriptor in turn.
    for (int fd = first; fd < 65536; fd++) {
        int flags = fcntl(fd, F_GETFD);
        if (flags >= 0) fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
    }
    return 0;
}

long tern_probe_forbidden_call(void) { return syscall(SYS_mount, 0, 0, 0, 0, 0); }

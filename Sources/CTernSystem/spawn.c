// Starting another program (a delivery command, one of ternd's own processes) the one way ternd
// does it: posix_spawn (no fork of a multi-threaded process), the child's descriptors 0…n-1 taken
// from `fds` in order, every other descriptor closed (closefrom in the child), and the signal
// state a program expects: nothing blocked (ternd blocks the signals it reads from a signalfd,
// and a blocked mask is inherited across exec) and the default action for the signals ternd
// ignores or handles (SIGPIPE is ignored in ternd; an ignored disposition is inherited too).
#define _GNU_SOURCE 1
#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <unistd.h>

#include "CTernSystem.h"

int tern_spawn(const char *path, char *const argv[], char *const envp[], const int *fds, int nfds, pid_t *pid) {
    if (nfds < 0 || nfds > 64) return EINVAL;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    int rc = posix_spawn_file_actions_init(&fa);
    if (rc != 0) return rc;
    rc = posix_spawnattr_init(&attr);
    if (rc != 0) {
        posix_spawn_file_actions_destroy(&fa);
        return rc;
    }
    // Two steps, so that a source that is also a target (fds = {4, 0}) is not overwritten before
    // it is copied: every source to a number above all of them, then each to its place.
    int base = 3;
    for (int i = 0; i < nfds; i++) {
        if (fds[i] + 1 > base) base = fds[i] + 1;
    }
    if (nfds > base) base = nfds;
    for (int i = 0; i < nfds && rc == 0; i++) rc = posix_spawn_file_actions_adddup2(&fa, fds[i], base + i);
    for (int i = 0; i < nfds && rc == 0; i++) rc = posix_spawn_file_actions_adddup2(&fa, base + i, i);
    // Everything from nfds up is closed in the child: the copies above, and any descriptor that
    // lacks close-on-exec (one ternd inherited, or one dup2 placed for another child): a child
    // gets exactly its list, never the parent's control sockets or a leaked file.
    if (rc == 0) rc = posix_spawn_file_actions_addclosefrom_np(&fa, nfds);
    sigset_t none, defaults;
    sigemptyset(&none);
    sigemptyset(&defaults);
    int reset[] = {SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGCHLD, SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM};
    for (unsigned i = 0; i < sizeof reset / sizeof reset[0]; i++) sigaddset(&defaults, reset[i]);
    if (rc == 0) rc = posix_spawnattr_setsigmask(&attr, &none);
    if (rc == 0) rc = posix_spawnattr_setsigdefault(&attr, &defaults);
    if (rc == 0) rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    if (rc == 0) rc = posix_spawn(pid, path, &fa, &attr, argv, envp);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    return rc;
}

#include <sys/mman.h>

int tern_secret_fd(const void *bytes, int len) {
    int fd = memfd_create("tern-secret", MFD_CLOEXEC);
    if (fd < 0) return -errno;
    if (write(fd, bytes, (size_t)len) != len || lseek(fd, 0, SEEK_SET) != 0) {
        int e = errno ? errno : EIO;
        close(fd);
        return -e;
    }
    return fd;
}

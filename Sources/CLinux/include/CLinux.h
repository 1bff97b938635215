#ifndef UGATE_CLINUX_H
#define UGATE_CLINUX_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>

/// Linux-only syscalls that need _GNU_SOURCE or macros Swift cannot import.
/// Each returns what the syscall returns; errno is left for the caller.
ssize_t ugate_splice(int fd_in, int fd_out, size_t len, unsigned int flags);
int ugate_pipe2(int fds[2], int flags);
int ugate_set_pipe_size(int fd, int size);
int ugate_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);

/// Original destination of a REDIRECTed TCP connection (SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST).
int ugate_original_dst(int fd, struct sockaddr_storage *out, socklen_t *len, int ipv6);

/// Sets IP_TRANSPARENT (and IPV6_TRANSPARENT) for TPROXY listeners.
int ugate_set_transparent(int fd, int ipv6);
/// Asks for IP_RECVORIGDSTADDR (and IPV6_RECVORIGDSTADDR) on a UDP socket.
int ugate_set_recv_origdst(int fd, int ipv6);
/// recvmsg that also returns the original destination from the control message; *dst_len is 0 when absent.
ssize_t ugate_recv_with_origdst(int fd, void *buf, size_t len,
                                struct sockaddr_storage *src, socklen_t *src_len,
                                struct sockaddr_storage *dst, socklen_t *dst_len);

/// epoll without the packed struct: one fd per call; `data` is an opaque 64-bit token.
int ugate_epoll_create(void);
int ugate_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data);
/// Waits like epoll_wait and unpacks the events into two parallel arrays.
int ugate_epoll_wait(int epfd, uint64_t *datas, uint32_t *events, int max, int timeout_ms);
/// A non-blocking, close-on-exec eventfd used to wake a loop thread.
int ugate_eventfd(void);
/// Names the calling thread in the kernel (`prctl(PR_SET_NAME)`: `/proc/.../comm`, perf, top);
/// longer names are cut at 15 bytes. Returns 0, or -1 with errno.
int ugate_set_thread_name(const char *name);
/// SO_LINGER {on, 0}: close() then sends RST instead of FIN.
int ugate_set_linger_zero(int fd);
/// Returns and clears SO_ERROR (the result of a non-blocking connect).
int ugate_socket_error(int fd);

extern const uint32_t UGATE_EPOLLIN;
extern const uint32_t UGATE_EPOLLOUT;
extern const uint32_t UGATE_EPOLLERR;
extern const uint32_t UGATE_EPOLLHUP;
extern const uint32_t UGATE_EPOLLRDHUP;
extern const int UGATE_EPOLL_CTL_ADD;
extern const int UGATE_EPOLL_CTL_MOD;
extern const int UGATE_EPOLL_CTL_DEL;

extern const unsigned int UGATE_SPLICE_F_MOVE;
extern const unsigned int UGATE_SPLICE_F_NONBLOCK;

#endif

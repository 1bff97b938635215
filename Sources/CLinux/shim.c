#include "CLinux.h"
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <errno.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <linux/netfilter_ipv4.h>
#include <linux/netfilter_ipv6/ip6_tables.h>

const unsigned int UGATE_SPLICE_F_MOVE = SPLICE_F_MOVE;
const uint32_t UGATE_EPOLLIN = EPOLLIN;
const uint32_t UGATE_EPOLLOUT = EPOLLOUT;
const uint32_t UGATE_EPOLLERR = EPOLLERR;
const uint32_t UGATE_EPOLLHUP = EPOLLHUP;
const uint32_t UGATE_EPOLLRDHUP = EPOLLRDHUP;
const int UGATE_EPOLL_CTL_ADD = EPOLL_CTL_ADD;
const int UGATE_EPOLL_CTL_MOD = EPOLL_CTL_MOD;
const int UGATE_EPOLL_CTL_DEL = EPOLL_CTL_DEL;

int ugate_epoll_create(void) {
    return epoll_create1(EPOLL_CLOEXEC);
}

int ugate_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.events = events;
    ev.data.u64 = data;
    return epoll_ctl(epfd, op, fd, &ev);
}

int ugate_epoll_wait(int epfd, uint64_t *datas, uint32_t *events, int max, int timeout_ms) {
    struct epoll_event evs[256];
    if (max > 256) {
        max = 256;
    }
    int n = epoll_wait(epfd, evs, max, timeout_ms);
    for (int i = 0; i < n; i++) {
        datas[i] = evs[i].data.u64;
        events[i] = evs[i].events;
    }
    return n;
}

int ugate_eventfd(void) {
    return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}

int ugate_set_thread_name(const char *name) {
    return prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0);
}

int ugate_set_linger_zero(int fd) {
    struct linger l = { .l_onoff = 1, .l_linger = 0 };
    return setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
}

int ugate_socket_error(int fd) {
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) {
        return errno;
    }
    return err;
}
const unsigned int UGATE_SPLICE_F_NONBLOCK = SPLICE_F_NONBLOCK;

ssize_t ugate_splice(int fd_in, int fd_out, size_t len, unsigned int flags) {
    return splice(fd_in, NULL, fd_out, NULL, len, flags);
}

int ugate_pipe2(int fds[2], int flags) {
    return pipe2(fds, flags);
}

int ugate_set_pipe_size(int fd, int size) {
    return fcntl(fd, F_SETPIPE_SZ, size);
}

int ugate_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
    return accept4(fd, addr, len, flags);
}

int ugate_original_dst(int fd, struct sockaddr_storage *out, socklen_t *len, int ipv6) {
    *len = sizeof(*out);
    memset(out, 0, sizeof(*out));
    if (ipv6) {
        return getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, out, len);
    }
    return getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, out, len);
}

int ugate_set_transparent(int fd, int ipv6) {
    int one = 1;
    if (ipv6) {
        return setsockopt(fd, SOL_IPV6, IPV6_TRANSPARENT, &one, sizeof(one));
    }
    return setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof(one));
}

int ugate_set_recv_origdst(int fd, int ipv6) {
    int one = 1;
    if (ipv6) {
        return setsockopt(fd, SOL_IPV6, IPV6_RECVORIGDSTADDR, &one, sizeof(one));
    }
    return setsockopt(fd, SOL_IP, IP_RECVORIGDSTADDR, &one, sizeof(one));
}

ssize_t ugate_recv_with_origdst(int fd, void *buf, size_t len,
                                struct sockaddr_storage *src, socklen_t *src_len,
                                struct sockaddr_storage *dst, socklen_t *dst_len) {
    char control[256];
    struct iovec iov = { .iov_base = buf, .iov_len = len };
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    msg.msg_name = src;
    msg.msg_namelen = sizeof(*src);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    ssize_t n = recvmsg(fd, &msg, 0);
    if (n < 0) {
        return n;
    }
    *src_len = msg.msg_namelen;
    *dst_len = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_IP && c->cmsg_type == IP_ORIGDSTADDR) {
            memcpy(dst, CMSG_DATA(c), sizeof(struct sockaddr_in));
            *dst_len = sizeof(struct sockaddr_in);
        } else if (c->cmsg_level == SOL_IPV6 && c->cmsg_type == IPV6_ORIGDSTADDR) {
            memcpy(dst, CMSG_DATA(c), sizeof(struct sockaddr_in6));
            *dst_len = sizeof(struct sockaddr_in6);
        }
    }
    return n;
}

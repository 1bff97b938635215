#ifndef UGATE_CUSRSCTP_SHIM_H
#define UGATE_CUSRSCTP_SHIM_H
/* usrsctp.h needs no INET/INET6 defines for the AF_CONN API used here (pkg-config's -DINET
 * -DINET6 are dropped by SwiftPM and only matter when building usrsctp itself). */
#include <stdint.h>
#include <string.h>
#include <stdlib.h>
#include <errno.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <usrsctp.h>

/* Small helpers over usrsctp's struct-heavy socket options, so Swift passes scalars only. */

/// Applies the data-channel socket options to a fresh AF_CONN socket. Returns 0 or the errno of
/// the first option that failed (negated option index in *failed_option).
static inline int ugate_sctp_configure(struct socket *so, uint16_t streams, uint32_t sndbuf,
                                       uint32_t rcvbuf, int *failed_option) {
    int on = 1;
    struct linger lin = {1, 0};
    struct sctp_assoc_value reset = {SCTP_ALL_ASSOC, SCTP_ENABLE_RESET_STREAM_REQ};
    struct sctp_initmsg init;
    int sb = (int)sndbuf, rb = (int)rcvbuf;
    uint16_t events[] = {SCTP_ASSOC_CHANGE, SCTP_PEER_ADDR_CHANGE, SCTP_REMOTE_ERROR,
                         SCTP_SHUTDOWN_EVENT, SCTP_ADAPTATION_INDICATION,
                         SCTP_SEND_FAILED_EVENT, SCTP_STREAM_RESET_EVENT,
                         SCTP_STREAM_CHANGE_EVENT, SCTP_PARTIAL_DELIVERY_EVENT};
    memset(&init, 0, sizeof(init));
    init.sinit_num_ostreams = streams;
    init.sinit_max_instreams = streams;
    *failed_option = 0;
    if (usrsctp_set_non_blocking(so, 1) < 0) { *failed_option = 1; return errno; }
    if (usrsctp_setsockopt(so, SOL_SOCKET, SO_LINGER, &lin, sizeof(lin)) < 0) { *failed_option = 2; return errno; }
    if (usrsctp_setsockopt(so, IPPROTO_SCTP, SCTP_ENABLE_STREAM_RESET, &reset, sizeof(reset)) < 0) { *failed_option = 3; return errno; }
    if (usrsctp_setsockopt(so, IPPROTO_SCTP, SCTP_RECVRCVINFO, &on, sizeof(on)) < 0) { *failed_option = 4; return errno; }
    if (usrsctp_setsockopt(so, IPPROTO_SCTP, SCTP_NODELAY, &on, sizeof(on)) < 0) { *failed_option = 5; return errno; }
    if (usrsctp_setsockopt(so, IPPROTO_SCTP, SCTP_EXPLICIT_EOR, &on, sizeof(on)) < 0) { *failed_option = 6; return errno; }
    if (usrsctp_setsockopt(so, IPPROTO_SCTP, SCTP_INITMSG, &init, sizeof(init)) < 0) { *failed_option = 7; return errno; }
    if (usrsctp_setsockopt(so, SOL_SOCKET, SO_SNDBUF, &sb, sizeof(sb)) < 0) { *failed_option = 8; return errno; }
    if (usrsctp_setsockopt(so, SOL_SOCKET, SO_RCVBUF, &rb, sizeof(rb)) < 0) { *failed_option = 9; return errno; }
    for (size_t i = 0; i < sizeof(events) / sizeof(events[0]); i++) {
        struct sctp_event ev;
        memset(&ev, 0, sizeof(ev));
        ev.se_assoc_id = SCTP_ALL_ASSOC;
        ev.se_on = 1;
        ev.se_type = events[i];
        if (usrsctp_setsockopt(so, IPPROTO_SCTP, SCTP_EVENT, &ev, sizeof(ev)) < 0) { *failed_option = 10; return errno; }
    }
    return 0;
}

/// Fixes the path MTU (no PMTU discovery: DTLS below decides the datagram size).
static inline int ugate_sctp_set_path_mtu(struct socket *so, uint32_t mtu) {
    struct sctp_paddrparams p;
    memset(&p, 0, sizeof(p));
    p.spp_assoc_id = SCTP_FUTURE_ASSOC;
    p.spp_flags = SPP_PMTUD_DISABLE;
    p.spp_pathmtu = mtu;
    if (usrsctp_setsockopt(so, IPPROTO_SCTP, SCTP_PEER_ADDR_PARAMS, &p, sizeof(p)) < 0) return errno;
    return 0;
}

static inline struct sockaddr_conn ugate_sctp_conn_address(uintptr_t id, uint16_t port) {
    struct sockaddr_conn a;
    memset(&a, 0, sizeof(a));
    a.sconn_family = AF_CONN;
    a.sconn_port = htons(port);
    a.sconn_addr = (void *)id;
    return a;
}

/// Delayed-acknowledgement settings of this socket's association (RFC 4960 §6.2): a SACK after
/// every `freq` DATA packets, or `delay_ms` after the first unacknowledged one. On a one-to-one
/// socket before connect (SCTP_FUTURE_ASSOC) they become the endpoint's defaults, which the
/// association inherits; afterwards they change the live association. Returns 0 or errno.
static inline int ugate_sctp_set_delayed_sack(struct socket *so, uint32_t delay_ms, uint32_t freq) {
    struct sctp_sack_info sack;
    memset(&sack, 0, sizeof(sack));
    sack.sack_assoc_id = SCTP_FUTURE_ASSOC;
    sack.sack_delay = delay_ms;
    sack.sack_freq = freq;
    if (usrsctp_setsockopt(so, IPPROTO_SCTP, SCTP_DELAYED_SACK, &sack, sizeof(sack)) < 0) return errno;
    return 0;
}

/// Reads back the delayed-acknowledgement settings (the association's when one exists).
/// Returns 0 or errno.
static inline int ugate_sctp_get_delayed_sack(struct socket *so, uint32_t *delay_ms, uint32_t *freq) {
    struct sctp_sack_info sack;
    socklen_t length = sizeof(sack);
    memset(&sack, 0, sizeof(sack));
    sack.sack_assoc_id = SCTP_FUTURE_ASSOC;
    if (usrsctp_getsockopt(so, IPPROTO_SCTP, SCTP_DELAYED_SACK, &sack, &length) < 0) return errno;
    *delay_ms = sack.sack_delay;
    *freq = sack.sack_freq;
    return 0;
}

/// Lowers the path MTU of the established association (every path: the address is AF_CONN
/// with a NULL sconn_addr, which usrsctp requires once an association exists — a zeroed
/// address fails with EAFNOSUPPORT). usrsctp lowers the association's smallest MTU
/// (`sctp_pathmtu_adjustment`): new DATA is cut to fit; chunks already cut larger are marked
/// may-fragment and resent as they are. Returns 0 or errno.
static inline int ugate_sctp_lower_association_path_mtu(struct socket *so, uint32_t mtu) {
    struct sctp_paddrparams p;
    memset(&p, 0, sizeof(p));
    struct sockaddr_conn any;
    memset(&any, 0, sizeof(any));
    any.sconn_family = AF_CONN;
    memcpy(&p.spp_address, &any, sizeof(any));
    p.spp_assoc_id = SCTP_FUTURE_ASSOC;
    p.spp_flags = SPP_PMTUD_DISABLE;
    p.spp_pathmtu = mtu;
    if (usrsctp_setsockopt(so, IPPROTO_SCTP, SCTP_PEER_ADDR_PARAMS, &p, sizeof(p)) < 0) return errno;
    return 0;
}

/// Binds to (id, local port). Returns 0 or errno.
static inline int ugate_sctp_bind(struct socket *so, uintptr_t id, uint16_t port) {
    struct sockaddr_conn a = ugate_sctp_conn_address(id, port);
    if (usrsctp_bind(so, (struct sockaddr *)&a, sizeof(a)) < 0) return errno;
    return 0;
}

/// Connects to (id, remote port); EINPROGRESS counts as success. Returns 0 or errno.
static inline int ugate_sctp_connect(struct socket *so, uintptr_t id, uint16_t port) {
    struct sockaddr_conn a = ugate_sctp_conn_address(id, port);
    if (usrsctp_connect(so, (struct sockaddr *)&a, sizeof(a)) < 0 && errno != EINPROGRESS) return errno;
    return 0;
}

/// Sends (part of) one message. pr_policy is SCTP_PR_SCTP_NONE/TTL/RTX. Returns the number of
/// bytes accepted, or -errno.
static inline ssize_t ugate_sctp_send(struct socket *so, uint16_t sid, uint32_t ppid, int unordered,
                                      uint16_t pr_policy, uint32_t pr_value, const void *data,
                                      size_t len, int end_of_record) {
    struct sctp_sendv_spa spa;
    ssize_t n;
    memset(&spa, 0, sizeof(spa));
    spa.sendv_flags = SCTP_SEND_SNDINFO_VALID;
    spa.sendv_sndinfo.snd_sid = sid;
    spa.sendv_sndinfo.snd_ppid = htonl(ppid);
    spa.sendv_sndinfo.snd_flags = (uint16_t)((end_of_record ? SCTP_EOR : 0) | (unordered ? SCTP_UNORDERED : 0));
    if (pr_policy != SCTP_PR_SCTP_NONE) {
        spa.sendv_flags |= SCTP_SEND_PRINFO_VALID;
        spa.sendv_prinfo.pr_policy = pr_policy;
        spa.sendv_prinfo.pr_value = pr_value;
    }
    n = usrsctp_sendv(so, data, len, NULL, 0, &spa, sizeof(spa), SCTP_SENDV_SPA, 0);
    return n < 0 ? -(ssize_t)errno : n;
}

/// Resets the outgoing direction of the given streams (RFC 8831 §6.7). Returns 0 or errno.
static inline int ugate_sctp_reset_streams(struct socket *so, const uint16_t *sids, uint16_t count) {
    size_t size = sizeof(struct sctp_reset_streams) + count * sizeof(uint16_t);
    struct sctp_reset_streams *r = (struct sctp_reset_streams *)calloc(1, size);
    int rc = 0;
    if (r == NULL) return ENOMEM;
    r->srs_assoc_id = SCTP_ALL_ASSOC;
    r->srs_flags = SCTP_STREAM_RESET_OUTGOING;
    r->srs_number_streams = count;
    memcpy(r->srs_stream_list, sids, count * sizeof(uint16_t));
    if (usrsctp_setsockopt(so, IPPROTO_SCTP, SCTP_RESET_STREAMS, r, (socklen_t)size) < 0) rc = errno;
    free(r);
    return rc;
}

/// Starts a graceful close (RFC 9260 §9.2): SCTP sends SHUTDOWN once everything queued is
/// acknowledged. Returns 0 or errno.
static inline int ugate_sctp_shutdown(struct socket *so) {
    if (usrsctp_shutdown(so, SHUT_WR) < 0) return errno;
    return 0;
}

/// The association's state (SCTP_STATUS sstat_state: SCTP_ESTABLISHED, SCTP_SHUTDOWN_SENT …),
/// or -1 when the socket has no association any more (shut down or aborted).
static inline int ugate_sctp_association_state(struct socket *so) {
    struct sctp_status status;
    socklen_t length = sizeof(status);
    memset(&status, 0, sizeof(status));
    if (usrsctp_getsockopt(so, IPPROTO_SCTP, SCTP_STATUS, &status, &length) < 0) return -1;
    return status.sstat_state == SCTP_CLOSED ? -1 : status.sstat_state;
}

/// Process-wide tuning, called once before the first socket.
static inline void ugate_sctp_global_tuning(void) {
    usrsctp_sysctl_set_sctp_ecn_enable(0);
    usrsctp_sysctl_set_sctp_pr_enable(1);
    usrsctp_sysctl_set_sctp_asconf_enable(0);
    usrsctp_sysctl_set_sctp_auth_enable(0);
    usrsctp_sysctl_set_sctp_blackhole(2);
    usrsctp_sysctl_set_sctp_nr_outgoing_streams_default(1024);
    usrsctp_sysctl_set_sctp_max_chunks_on_queue(64 * 1024);
    usrsctp_sysctl_set_sctp_delayed_sack_time_default(20);
    // A SACK per 4 DATA packets instead of 2: a quarter of the SACK datagrams one way, and an
    // echo goes from 0.75 to 0.65 SACKs per DATA packet (the rest are delayed SACKs flushed
    // when a peer's SACK arrives). 8 stalls small windows behind the 20 ms timer.
    usrsctp_sysctl_set_sctp_sack_freq_default(4);
    usrsctp_sysctl_set_sctp_rto_min_default(200);
    usrsctp_sysctl_set_sctp_rto_initial_default(1000);
    usrsctp_sysctl_set_sctp_rto_max_default(10000);
    usrsctp_sysctl_set_sctp_init_rto_max_default(10000);
    usrsctp_sysctl_set_sctp_heartbeat_interval_default(10000);
    usrsctp_sysctl_set_sctp_init_rtx_max_default(8);
    usrsctp_sysctl_set_sctp_assoc_rtx_max_default(10);
    usrsctp_sysctl_set_sctp_path_rtx_max_default(10);
    usrsctp_sysctl_set_sctp_initial_cwnd(10);
    usrsctp_sysctl_set_sctp_default_cc_module(SCTP_CC_HTCP);
    usrsctp_sysctl_set_sctp_sendspace(4 * 1024 * 1024);
    usrsctp_sysctl_set_sctp_recvspace(4 * 1024 * 1024);
}

typedef void (*ugate_sctp_upcall)(struct socket *sock, void *context, int flags);

/// A one-to-one AF_CONN SCTP socket in pull mode: no receive callback, so unread data stays in
/// the socket's receive buffer and closes the peer's window (flow control). `upcall` runs when
/// the socket becomes readable or writable, with `context` (a registry id).
static inline struct socket *ugate_sctp_new_socket(ugate_sctp_upcall upcall, void *context) {
    struct socket *so = usrsctp_socket(AF_CONN, SOCK_STREAM, IPPROTO_SCTP, NULL, NULL, 0, NULL);
    if (so != NULL && usrsctp_set_upcall(so, upcall, context) < 0) {
        usrsctp_close(so);
        return NULL;
    }
    return so;
}

/// Reads (part of) one message or notification. Returns the byte count (0 = end of stream) or
/// -errno (-EWOULDBLOCK when nothing is queued); fills the stream id, PPID (host order) and flags.
static inline ssize_t ugate_sctp_recv(struct socket *so, void *buffer, size_t length,
                                      uint16_t *sid, uint32_t *ppid, int *flags) {
    struct sctp_rcvinfo info;
    socklen_t info_length = sizeof(info);
    unsigned int info_type = 0;
    ssize_t n;
    memset(&info, 0, sizeof(info));
    *flags = 0;
    n = usrsctp_recvv(so, buffer, length, NULL, NULL, &info, &info_length, &info_type, flags);
    if (n < 0) return -(ssize_t)errno;
    *sid = info_type == SCTP_RECVV_RCVINFO ? info.rcv_sid : 0;
    *ppid = info_type == SCTP_RECVV_RCVINFO ? ntohl(info.rcv_ppid) : 0;
    return n;
}

/// usrsctp's process-wide counters that show how SACKs are spent: packets sent (sctps_outpackets), SACK chunks
/// sent, window-update-only SACKs sent, DATA chunks sent, DATA chunks received, duplicate DATA
/// received, DATA retransmitted, DATA dropped for lack of receive window (in that order).
static inline void ugate_sctp_sack_counters(uint32_t out[8]) {
    struct sctpstat stat;
    memset(&stat, 0, sizeof(stat));
    usrsctp_get_stat(&stat);
    out[0] = stat.sctps_outpackets;
    out[1] = stat.sctps_sendsacks;
    out[2] = stat.sctps_wu_sacks_sent;
    out[3] = stat.sctps_senddata;
    out[4] = stat.sctps_recvdata;
    out[5] = stat.sctps_recvdupdata;
    out[6] = stat.sctps_sendretransdata;
    out[7] = stat.sctps_datadroprwnd;
}

/// Message flags from usrsctp_recvv, as plain constants for Swift.
enum { UGATE_MSG_EOR = MSG_EOR, UGATE_MSG_NOTIFICATION = MSG_NOTIFICATION };

typedef int (*ugate_sctp_conn_output)(void *addr, void *buffer, size_t length, uint8_t tos, uint8_t set_df);

/// CRC32c (Castagnoli, reflected) with the SSE4.2 instruction; `crc` starts at 0xFFFFFFFF and the
/// final value is its complement.
__attribute__((target("sse4.2")))
static inline uint32_t ugate_crc32c_sse42(uint32_t crc, const uint8_t *data, size_t length) {
    uint64_t crc64 = crc;
    while (length >= 8) {
        uint64_t word;
        memcpy(&word, data, 8);
        crc64 = __builtin_ia32_crc32di(crc64, word);
        data += 8;
        length -= 8;
    }
    crc = (uint32_t)crc64;
    while (length-- > 0) crc = __builtin_ia32_crc32qi(crc, *data++);
    return crc;
}

/// Whether this CPU has the CRC32 instruction (SSE4.2).
static inline int ugate_cpu_has_crc32c(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.2");
}

/// The SCTP checksum of a packet (RFC 9260 Appendix A): CRC32c over the packet with the checksum
/// field as zero, stored little-endian in bytes 8..11. Writes it into the packet.
static inline void ugate_sctp_fill_checksum(uint8_t *packet, size_t length) {
    uint32_t crc;
    if (length < 12) return;
    memset(packet + 8, 0, 4);
    crc = ~ugate_crc32c_sse42(0xFFFFFFFFu, packet, length);
    packet[8] = (uint8_t)(crc & 0xff);
    packet[9] = (uint8_t)((crc >> 8) & 0xff);
    packet[10] = (uint8_t)((crc >> 16) & 0xff);
    packet[11] = (uint8_t)(crc >> 24);
}

/// Verifies an incoming packet's checksum (restores the packet as it was). Returns 1 when valid.
static inline int ugate_sctp_checksum_valid(uint8_t *packet, size_t length) {
    uint8_t received[4];
    int valid;
    if (length < 12) return 0;
    memcpy(received, packet + 8, 4);
    ugate_sctp_fill_checksum(packet, length);
    valid = memcmp(received, packet + 8, 4) == 0;
    memcpy(packet + 8, received, 4);
    return valid;
}

/// usrsctp_init_nothreads without a debug printer (a variadic pointer Swift cannot form):
/// no timer or receive thread; the caller drives usrsctp_handle_timers.
/// Returns 1 when the checksum is offloaded to the caller (SSE4.2 present): usrsctp then neither
/// computes nor verifies it, and the caller fills it into each outgoing packet with
/// ugate_sctp_fill_checksum and checks incoming ones with ugate_sctp_checksum_valid.
static inline int ugate_sctp_init(ugate_sctp_conn_output output) {
    int offload = ugate_cpu_has_crc32c();
    usrsctp_init_nothreads(0, output, NULL);
    ugate_sctp_global_tuning();
    if (offload) usrsctp_enable_crc32c_offload();
    return offload;
}

#endif

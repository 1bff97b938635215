import CNice
#if canImport(Glibc)
import Glibc
#endif

/// Kernel socket buffers of the selected pair's UDP socket.
///
/// libnice leaves its sockets at the kernel default (`net.core.rmem_default`, about 208 KiB:
/// some 170 datagrams of 1200 bytes). A data channel sends bursts of a congestion window at a
/// time; when the loop thread is briefly descheduled, the receive buffer overflows, SCTP sees a
/// gap, answers every packet with a SACK until fast retransmit repairs it, and halves its
/// window. Measured over loopback: about 650 drops per 100 MB echoed with the default buffers.
enum SocketBuffers {
    /// Requested receive and send buffer size. Without privileges the kernel caps it at
    /// `net.core.rmem_max` / `wmem_max`; with CAP_NET_ADMIN the FORCE variants pass the cap.
    static let bytes: Int32 = 4 << 20

    /// Enlarges the buffers of the socket carrying the selected pair (none for relayed pairs:
    /// libnice does not expose the TURN socket). Runs on the loop thread.
    static func enlarge(agent: OpaquePointer, streamID: guint) {
        guard let socket = nice_agent_get_selected_socket(agent, streamID, 1) else { return }
        defer { g_object_unref(UnsafeMutableRawPointer(socket)) }
        let fd = g_socket_get_fd(socket)
        guard fd >= 0 else { return }
        var size = bytes
        let length = socklen_t(MemoryLayout<Int32>.size)
        if setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, length) != 0 {
            _ = setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, length)
        }
        if setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, length) != 0 {
            _ = setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, length)
        }
    }
}

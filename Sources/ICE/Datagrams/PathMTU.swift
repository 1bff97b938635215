import CNiceShim

/// How large a datagram the selected pair's path carries, as far as this host's kernel knows.
enum PathMTU {
    /// The largest UDP payload towards the remote side of `pair` without IP fragmentation, from
    /// the kernel (`IP_MTU`/`IPV6_MTU` of a probe socket connected to the remote address: the
    /// route's MTU or the cached path MTU, minus IP and UDP headers; 65 507 on IPv4 loopback, 1472 over
    /// a 1500-byte Ethernet link).
    ///
    /// Only for a direct UDP host↔host pair. A pair through a NAT mapping (srflx, prflx), a TURN
    /// relay or TCP crosses hops the kernel knows nothing about (and TURN adds headers): nil,
    /// and the caller keeps the ≈ 1200 bytes every WebRTC path must carry.
    static func payloadLimit(_ pair: ICECandidatePair) -> Int? {
        guard pair.local.kind == .host, pair.remote.kind == .host,
              pair.local.transport == .udp, pair.remote.transport == .udp, pair.remote.hasIPLiteral
        else { return nil }
        let limit = ugate_udp_path_payload_limit(pair.remote.address, pair.remote.port)
        return limit > 0 ? Int(limit) : nil
    }
}

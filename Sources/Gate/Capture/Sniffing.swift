/// Bounded peek at a captured stream's first bytes (byte limit and timeout) to learn TLS SNI/ALPN,
/// the HTTP/1 Host or the HTTP/2 preface before routing. The peeked bytes stay in the
/// connection's inbox and reach the destination unchanged.
enum Sniffing {
    enum Outcome: Equatable {
        /// Route and forward (with whatever the peek learned).
        case forward
        /// The bytes can never be valid for the protocol they claim (a garbage ClientHello,
        /// a broken HTTP head): close the connection instead of forwarding them.
        case reject(String)
    }

    /// Reads until the sniffer decides, `sniffBytes` are in, or `sniffTimeout` passes (a
    /// server-first protocol sends nothing: it is forwarded unsniffed).
    static func peek(_ conn: ClientConn, into info: inout StreamInfo, context: GateContext) async -> Outcome {
        let deadline = GateLoop.monotonicMillis() + UInt64(context.config.sniffTimeout * 1000)
        let limit = context.config.sniffBytes
        while true {
            if let outcome = classify(conn.inbox, limit: limit, into: &info) { return outcome }
            do {
                guard try await conn.read(max: max(1, limit - conn.inbox.count), deadline: deadline) else { return .forward }
            } catch {
                return .forward
            }
        }
    }

    /// The outcome once the bytes decide it, nil while more bytes could change it.
    static func classify(_ bytes: [UInt8], limit: Int, into info: inout StreamInfo) -> Outcome? {
        switch Sniffer.sniff(bytes, maxBytes: limit) {
        case .needMore:
            return nil
        case .tls(let hello):
            info.proto = "tls"
            info.serverName = hello.serverName
            info.alpn = hello.alpn
        case .http1(let head):
            info.proto = "http/1.1"
            info.serverName = head.values("host").first.map(hostWithoutPort)
        case .http2Preface:
            info.proto = "h2"
        case .socks5:
            info.proto = "socks5"
        case .unknown:
            break
        case .invalid(let error):
            return .reject("\(error)")
        }
        return .forward
    }

    /// `example.com:8080` → `example.com`, `[::1]:80` → `::1`.
    static func hostWithoutPort(_ host: String) -> String {
        if host.hasPrefix("["), let end = host.firstIndex(of: "]") {
            return String(host[host.index(after: host.startIndex)..<end])
        }
        if let colon = host.lastIndex(of: ":"), host[host.index(after: colon)...].allSatisfy(\.isNumber) {
            return String(host[..<colon])
        }
        return host
    }
}

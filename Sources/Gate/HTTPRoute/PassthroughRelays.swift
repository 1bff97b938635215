import Synchronization

/// The TLS passthrough streams of one HTTPRoute listener (relayed untouched by the gate's
/// `Relay`, dialled directly or through a mesh upstream), kept so that shutdown and a removed
/// Gateway listener drain them like the connections NIO serves: a passthrough stream cannot
/// be told to finish (its bytes are opaque TLS), so it runs until it ends by itself or the
/// drain's timeout, and is then closed (both sides reset).
///
/// Threads: relays start, end and are closed on their gate loop; the registry is a mutex
/// around (relay id → loop) so any thread can count and close them.
final class PassthroughRelays: Sendable {
    private struct State {
        var open: [UInt64: GateLoop] = [:]
        /// After a shutdown's close: a relay that starts later (its dial was in flight) is
        /// closed at once.
        var closed = false
    }

    private let state = Mutex(State())

    /// Passthrough streams still open.
    var count: Int { state.withLock { $0.open.count } }

    /// Relays `conn` to the connected `upstream` on the connection's loop (as
    /// `GateContext.relay`) and keeps the stream until it ends.
    func relay(_ conn: ClientConn, upstream: Int32, info: StreamInfo, upstreamName: String, context: GateContext) {
        let client = conn.handOff()
        let prefix = conn.takeInbox()
        let loop = conn.loop
        loop.execute { [self] in
            let relay = context.startRelay(
                loop: loop, client: client, upstream: upstream, info: info, upstreamName: upstreamName, mode: .copy, prefix: prefix)
            // Ended already (the first pump failed): nothing to keep.
            guard loop.relays[relay.id] != nil else { return }
            let id = relay.id
            let closed = state.withLock { state in
                state.open[id] = loop
                return state.closed
            }
            relay.onFinish = { [weak self] in self?.state.withLock { _ = $0.open.removeValue(forKey: id) } }
            if closed { relay.abort(reason: "httproute listener shut down") }
        }
    }

    /// Closes every open stream now; `permanently` (shutdown): streams that start later too.
    func closeAll(reason: String, permanently: Bool) {
        let open = state.withLock { state in
            if permanently { state.closed = true }
            return state.open
        }
        Self.close(open, reason: reason)
    }

    /// Closes the streams open now that are still open after `seconds` (a removed listener's
    /// drain); streams that start later are not affected.
    func closeLater(after seconds: Double, reason: String) {
        let open = state.withLock { $0.open }
        guard !open.isEmpty else { return }
        for (loop, ids) in Self.byLoop(open) {
            loop.execute {
                loop.schedule(afterMillis: UInt64(max(seconds, 0) * 1000)) {
                    for id in ids { loop.relays[id]?.abort(reason: reason) }
                }
            }
        }
    }

    private static func close(_ open: [UInt64: GateLoop], reason: String) {
        for (loop, ids) in byLoop(open) {
            loop.execute {
                for id in ids { loop.relays[id]?.abort(reason: reason) }
            }
        }
    }

    private static func byLoop(_ open: [UInt64: GateLoop]) -> [(GateLoop, [UInt64])] {
        Dictionary(grouping: open, by: { ObjectIdentifier($0.value) }).values.map { entries in
            (entries[0].value, entries.map(\.key))
        }
    }
}

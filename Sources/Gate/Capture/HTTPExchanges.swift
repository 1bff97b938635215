import Glibc
import Logging

/// Absolute-URI requests on one kept-alive client connection of the HTTP proxy: each request
/// goes out in origin-form (hop-by-hop fields removed) on an upstream connection to its origin,
/// which is kept for the next request to the same origin and re-dialled when the next request
/// names another one. The ends of request and response bodies come from their framing
/// (`Content-Length`, `HTTPChunkedScanner`, or the origin's close — which ends the client
/// connection too), so the bytes are copied in userspace on the connection's task, not by a
/// `Relay`: this path serves plain-HTTP requests, not bulk tunnels (CONNECT stays zero-parse).
/// One access-log line per request (`mode=http`).
///
/// An origin whose upstream carries streams itself (a mesh peer: `Upstream.open` returns an
/// `UpstreamStream`) gets no socket to speak to: the request head (origin-form, hop-by-hop fields
/// removed, `Connection: close`; `Upgrade` kept, so a WebSocket can switch) is written into the
/// stream first and the client socket is attached behind it (`GateContext.relay`), as CONNECT
/// does — no socketpair. The rest of the connection is then opaque: the response comes back as
/// the origin sent it, the origin closes after it, and the client connection ends with the
/// stream (one request per client connection on this path; one access-log line, `mode=stream`).
struct HTTPExchanges {
    enum Failure: Error {
        /// Routing or dialling the origin failed (answered 403/502/504).
        case dial(any Error)
        /// The kept upstream connection was closed by the origin before it answered.
        case staleUpstream
    }

    let name: String
    let context: GateContext
    private var upstream: ClientConn?
    private var origin: Destination?
    /// Bytes read per call while copying a body.
    private static let chunk = 256 * 1024

    init(name: String, context: GateContext) {
        self.name = name
        self.context = context
    }

    /// Closes the kept upstream connection, if any.
    mutating func closeUpstream() {
        upstream?.close()
        upstream = nil
        origin = nil
    }

    /// A deadline `idleTimeout` from now: each wait during an exchange gets the stream idle limit.
    private var idleDeadline: UInt64 { GateLoop.monotonicMillis() + UInt64(context.config.idleTimeout * 1000) }

    /// Forwards `head` (its body follows in `conn.inbox` / on the socket) to `destination` and
    /// the response back. Returns true when the client connection stays open for another request.
    /// Throws `WireError` for a request that cannot be forwarded (answered 400) and
    /// `Failure.dial` when the origin cannot be reached; other errors end the connection.
    mutating func exchange(_ conn: ClientConn, _ head: HTTPRequestHead, destination: Destination) async throws -> Bool {
        // An origin may close an idle kept connection at any time (RFC 9112 §9.3.1): a request
        // without a body that finds it closed is sent again on a new connection.
        if upstream != nil, origin == destination, head.bodyFraming == .none {
            do {
                return try await exchangeOnce(conn, head, destination: destination)
            } catch Failure.staleUpstream {
                closeUpstream()
            }
        }
        return try await exchangeOnce(conn, head, destination: destination)
    }

    private mutating func exchangeOnce(_ conn: ClientConn, _ head: HTTPRequestHead, destination: Destination) async throws -> Bool {
        // A client that ends its connection after this request ends the upstream one too.
        let answerContinue = head.expectsContinue && head.bodyFraming != .none
        let forwardHead = try head.forwardHead(HTTPForwardOptions(close: !head.wantsKeepAlive, answersExpect: answerContinue))
        let info = StreamInfo(
            listener: name, source: conn.peer, destination: destination,
            serverName: SocketAddress.isLiteral(destination.host) ? nil : destination.host, proto: "http/1.1")
        var upstreamName = "kept"
        if origin != destination || upstream == nil {
            closeUpstream()
            do {
                let (opened, name) = try await context.open(info)
                guard case .socket(let fd) = opened else {
                    // Carried by the upstream itself: the request first, then the client socket.
                    let carriedHead: [UInt8]
                    do {
                        carriedHead = try head.forwardHead(HTTPForwardOptions(keepUpgrade: true, close: true))
                    } catch {
                        opened.abort()
                        throw error
                    }
                    context.relay(conn, upstream: opened, info: info, upstreamName: name, mode: .copy, prefix: carriedHead)
                    return false
                }
                try Sys.setNonBlocking(fd)
                upstream = ClientConn(fd: fd, loop: conn.loop, peer: SocketAddress.peer(of: fd))
                upstreamName = name
                origin = destination
            } catch let error as WireError {
                throw error
            } catch {
                context.dialFailed(info, error)
                throw Failure.dial(error)
            }
        }
        let up = upstream!
        let started = GateLoop.monotonicMillis()
        GateMetrics.shared.streamOpened()
        var bytesUp: UInt64 = 0
        var bytesDown: UInt64 = 0
        var end = "done"
        defer {
            GateMetrics.shared.streamClosed(up: bytesUp, down: bytesDown, end: end, mode: .copy)
            var meta: Logger.Metadata = [
                "listener": "\(name)", "src": "\(conn.peer)", "dst": "\(destination)", "proto": "http/1.1",
                "upstream": "\(upstreamName)", "bytes.up": "\(bytesUp)", "bytes.down": "\(bytesDown)",
                "ms": "\(GateLoop.monotonicMillis() - started)", "mode": "http", "end": "\(end)",
                "request": "\(head.method) \(head.target)",
            ]
            if let sni = info.serverName { meta["sni"] = "\(sni)" }
            context.accessLog.info("stream", metadata: meta)
        }
        do {
            let kept = upstreamName == "kept"
            do {
                try await up.write(forwardHead, deadline: idleDeadline)
                bytesUp += UInt64(forwardHead.count)
                // The body is copied before any response is read, so an origin's own 100
                // would come too late: the proxy answers the expectation once the request
                // is on its way (the origin never sees `Expect`).
                if answerContinue {
                    let interim = Array("HTTP/1.1 100 Continue\r\n\r\n".utf8)
                    try await conn.write(interim, deadline: idleDeadline)
                    bytesDown += UInt64(interim.count)
                }
                bytesUp += try await copyBody(from: conn, to: up, head.bodyFraming)
                // EOF, EPIPE or ECONNRESET before the first response byte: the origin had closed it.
                if kept, up.inbox.isEmpty, try await !up.read(max: HTTPExchanges.chunk, deadline: idleDeadline) {
                    throw Failure.staleUpstream
                }
            } catch let error as GateError where kept && error.code == .syscall {
                end = "stale"
                throw Failure.staleUpstream
            } catch Failure.staleUpstream {
                end = "stale"
                throw Failure.staleUpstream
            }
            var response: HTTP1ResponseHead
            var raw: [UInt8]
            repeat {
                (response, raw) = try await readResponseHead(up)
                if response.isInterim {
                    try await conn.write(raw, deadline: idleDeadline)
                    bytesDown += UInt64(raw.count)
                }
            } while response.isInterim
            let framing = try response.bodyFraming(requestMethod: head.method)
            let keepClient = framing != .untilClose && head.wantsKeepAlive
            // A tunnel (101) needs its Upgrade/Connection fields: relay that head as it came.
            let relayedHead = framing == .tunnel ? raw : response.forwardHead(clientVersion: head.version, close: !keepClient)
            try await conn.write(relayedHead, deadline: idleDeadline)
            bytesDown += UInt64(relayedHead.count)
            if framing == .tunnel {
                // 101 or similar: the rest is opaque both ways (Upgrade is hop-by-hop, so only
                // an origin that ignores that gets here).
                let pending = up.takeInbox()
                try await conn.write(pending, deadline: idleDeadline)
                context.relay(conn, upstream: up.handOff(), info: info, upstreamName: upstreamName, mode: .copy)
                upstream = nil
                origin = nil
                return false
            }
            bytesDown += try await copyBody(from: up, to: conn, framing)
            if framing == .untilClose || !response.keepsConnection { closeUpstream() }
            return keepClient
        } catch {
            if end == "done" { end = "reset" }
            closeUpstream()
            throw error
        }
    }

    /// Reads until a complete response head; returns it and its raw bytes (forwarded as they came).
    private func readResponseHead(_ up: ClientConn) async throws -> (HTTP1ResponseHead, [UInt8]) {
        while true {
            switch HTTP1ResponseHead.parse(up.inbox) {
            case .needMore:
                guard try await up.read(deadline: idleDeadline) else {
                    throw GateError(.protocolViolation, "origin \(up.peer) closed before a complete response head")
                }
            case .invalid(let error):
                throw GateError(.protocolViolation, "origin \(up.peer) sent a bad response head: \(error)")
            case .done(let head, let consumed):
                let raw = Array(up.inbox[0..<consumed])
                up.inbox.removeFirst(consumed)
                return (head, raw)
            }
        }
    }

    /// Copies one message body from `source` (its `inbox` first) to `sink`, ending where the
    /// framing says; returns the bytes copied.
    private func copyBody(from source: ClientConn, to sink: ClientConn, _ framing: HTTPBodyFraming) async throws -> UInt64 {
        var copied: UInt64 = 0
        var remaining: Int
        var scanner = HTTPChunkedScanner()
        switch framing {
        case .none, .tunnel: return 0
        case .contentLength(let n): remaining = n
        case .chunked, .untilClose: remaining = Int.max
        }
        while remaining > 0 {
            if source.inbox.isEmpty {
                guard try await source.read(max: HTTPExchanges.chunk, deadline: idleDeadline) else {
                    if framing == .untilClose { return copied }
                    throw GateError(.protocolViolation, "\(source.peer) closed inside a message body")
                }
            }
            var take = min(remaining, source.inbox.count)
            if framing == .chunked {
                switch scanner.scan(source.inbox) {
                case .needMore: break
                case .end(let consumed):
                    take = consumed
                    remaining = 0
                case .invalid(let error):
                    throw GateError(.protocolViolation, "\(source.peer) sent a bad chunked body: \(error)")
                }
            } else if case .contentLength = framing {
                remaining -= take
            }
            try await sink.write(Array(source.inbox[0..<take]), deadline: idleDeadline)
            source.inbox.removeFirst(take)
            copied += UInt64(take)
        }
        return copied
    }
}

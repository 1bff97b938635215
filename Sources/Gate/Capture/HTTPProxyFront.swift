import Glibc

/// The HTTP proxy listener (base+2): `CONNECT host:port` opens a tunnel (a `Relay`); absolute-URI
/// requests (`GET http://host/path`) are rewritten to origin-form with hop-by-hop fields removed
/// and exchanged one by one on a keep-alive client connection (`HTTPExchanges`).
/// Failures answer 400 (bad request), 403 (no route), 502 (connect failed), 504 (timeout).
struct HTTPProxyFront: CaptureFront {
    let name: String
    let mode: ForwardMode
    let context: GateContext

    func serve(_ conn: ClientConn) async {
        var exchanges = HTTPExchanges(name: name, context: context)
        defer { exchanges.closeUpstream() }
        var deadline = context.handshakeDeadline
        do {
            while true {
                switch HTTPRequestHead.parse(conn.inbox) {
                case .needMore:
                    guard try await conn.read(deadline: deadline) else {
                        conn.close()
                        return
                    }
                case .invalid(let error):
                    await refuse(conn, HTTPResponseWriter.error(error), "\(error)", deadline: deadline)
                    return
                case .done(let head, let consumed):
                    conn.inbox.removeFirst(consumed)
                    guard try await proxy(conn, head, exchanges: &exchanges, deadline: deadline) else { return }
                    // The next request on a kept-alive connection may be a while coming.
                    deadline = GateLoop.monotonicMillis() + UInt64(context.config.idleTimeout * 1000)
                }
            }
        } catch {
            context.log.info("http proxy connection failed", metadata: ["src": "\(conn.peer)", "error": "\(error)"])
            conn.close(reset: true)
        }
    }

    /// Serves one request; true when the client connection stays open for the next one.
    private func proxy(_ conn: ClientConn, _ head: HTTPRequestHead, exchanges: inout HTTPExchanges, deadline: UInt64) async throws -> Bool {
        let target: HTTPProxyTarget
        do {
            target = try head.proxyTarget()
        } catch {
            await refuse(conn, HTTPResponseWriter.error(error), "\(error)", deadline: deadline)
            return false
        }
        switch target {
        case .connect(let destination):
            exchanges.closeUpstream()
            await tunnel(conn, to: destination, deadline: deadline)
            return false
        case .absolute(let destination, _):
            do {
                let keep = try await exchanges.exchange(conn, head, destination: destination)
                if !keep { conn.close() }
                return keep
            } catch let error as WireError {
                await refuse(conn, HTTPResponseWriter.error(error), "\(error)", deadline: deadline)
            } catch HTTPExchanges.Failure.dial(let error) {
                await refuse(
                    conn, HTTPResponseWriter.error(status: HTTPProxyFront.status(for: error), message: "connect to \(destination): \(error)"),
                    "\(error)", deadline: deadline)
            }
            return false
        case .origin:
            await refuse(
                conn, HTTPResponseWriter.error(status: 400, message: "this is a proxy: send CONNECT host:port or an absolute URI"),
                "origin-form request", deadline: deadline)
            return false
        }
    }

    private func tunnel(_ conn: ClientConn, to destination: Destination, deadline: UInt64) async {
        let info = StreamInfo(
            listener: name, source: conn.peer, destination: destination,
            serverName: SocketAddress.isLiteral(destination.host) ? nil : destination.host, proto: "connect")
        do {
            let (opened, upstream) = try await context.open(info)
            do {
                try await conn.write(HTTPResponseWriter.connectEstablished(), deadline: deadline)
            } catch {
                opened.abort()
                conn.close(reset: true)
                return
            }
            context.relay(conn, upstream: opened, info: info, upstreamName: upstream, mode: mode)
        } catch {
            let status = HTTPProxyFront.status(for: error)
            await refuse(
                conn, HTTPResponseWriter.error(status: status, message: "connect to \(destination): \(error)"),
                "\(error)", deadline: deadline)
        }
    }

    /// The status for a failed dial: 504 timeout, 403 no route, 502 otherwise; a mesh peer's
    /// refusal keeps its own status (403 forbidden destination, 504 …).
    static func status(for error: any Error) -> Int {
        if let error = error as? any UpstreamStatusError, let status = error.upstreamStatus, (400...599).contains(status) {
            return status
        }
        guard let error = error as? GateError else { return 502 }
        switch error.code {
        case .timeout: return 504
        case .noRoute: return 403
        case .syscall: return HTTPResponseWriter.status(errno: error.errno)
        default: return 502
        }
    }

    private func refuse(_ conn: ClientConn, _ response: [UInt8], _ why: String, deadline: UInt64) async {
        GateMetrics.shared.handshakeFailures.increment()
        context.log.info("http proxy refused", metadata: ["src": "\(conn.peer)", "error": "\(why)"])
        try? await conn.write(response, deadline: deadline)
        conn.close()
    }
}
